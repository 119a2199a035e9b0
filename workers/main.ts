import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue } from 'bullmq';
import { configPath } from '../src/config/config-path.js';
import { ConfigError, loadConfigFile, loadEnv } from '../src/config/load.js';
import { handleShutdownSignals } from '../src/shared/shutdown-signals.js';
import { createDispatchLogRepository } from '../src/dispatch-log/dispatch-log-repository.js';
import { migrate } from '../src/dispatch-log/migrate.js';
import { partitionUpkeepMs, runPartitionUpkeep } from '../src/dispatch-log/partitions.js';
import { createPostgresDatabase, embeddedStoreDirectory, openPgliteDatabase, type SqlDatabase } from '../src/dispatch-log/sql-database.js';
import { checkRedisPersistence } from '../src/events/redis-persistence.js';
import { connectQueueRedis, queuePrefix, queueRedisOf } from '../src/events/queue-connection.js';
import { createDispatchLogMetrics, createMetricsRegistry } from '../src/metrics/registry.js';
import { createLogger, type Logger } from '../src/shared/logger.js';
import { DispatchLogConsumer } from './dispatch-log-consumer.js';
import { startMetricsServer } from './metrics-server.js';
import { errorMessage } from '../src/shared/error-message.js';

/** Postgres may start after the worker (compose): keep trying, the queue holds the events meanwhile. */
async function migrateWithRetry(db: SqlDatabase, logger: Logger): Promise<void> {
  for (let delayMs = 500; ; delayMs = Math.min(delayMs * 2, 10_000)) {
    try {
      await migrate(db, logger);
      return;
    } catch (err: unknown) {
      logger.warn({ err: errorMessage(err), retryInMs: delayMs }, 'worker: migration failed; retrying');
      await sleep(delayMs);
    }
  }
}

async function main(): Promise<void> {
  const env = loadEnv(process.env);
  const logger = createLogger(env.LOG_LEVEL).child({ process: 'worker' });
  const queueRedis = queueRedisOf(env);
  if (!queueRedis) throw new ConfigError('environment', ['REDIS_URL: the worker consumes the BullMQ queue and needs Redis (or BOO_REDIS_CLUSTER)']);
  const config = loadConfigFile(configPath(env.BOO_CONFIG), process.env);
  const replica = env.BOO_REPLICA_ID ?? `${hostname()}-${process.pid}`;

  // Set once the consumer runs; before, there is nothing in hand to finish.
  let finish: (() => Promise<void>) | undefined;
  handleShutdownSignals({ logger, close: () => finish?.() ?? Promise.resolve(), deadlineMs: () => 30_000 });

  let db: SqlDatabase;
  if (env.DATABASE_URL) {
    db = createPostgresDatabase(env.DATABASE_URL, logger, {
      applicationName: 'boo-worker',
      // Not tied to the job lock: the worker renews its locks while a statement runs, so a slow
      // batch is not taken over; this only bounds a statement that hangs.
      statementTimeoutMs: 10_000,
    });
  } else {
    logger.warn('DATABASE_URL is unset: writing to the embedded store under BOO_DATA_DIR (one worker only)');
    db = await openPgliteDatabase(embeddedStoreDirectory(env.BOO_DATA_DIR));
  }
  await migrateWithRetry(db, logger);

  const register = createMetricsRegistry(replica);
  const metrics = createDispatchLogMetrics(register);
  const consumer = new DispatchLogConsumer({
    ...queueRedis,
    queueName: env.BOO_QUEUE,
    repository: createDispatchLogRepository(db),
    metrics,
    logger,
    batchSize: config.events.batchSize,
    batchMaxWaitMs: config.events.batchMaxWaitMs,
    eventsPerJob: config.events.eventsPerJob,
    lockDurationMs: env.BOO_WORKER_LOCK_MS,
  });
  // Queue depth for /metrics, read on scrape through a connection that fails fast.
  const countsConnection = connectQueueRedis(queueRedis, { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 2_000 });
  countsConnection.on('error', () => metrics.errors.labels('connection').inc());
  const prefix = queuePrefix(queueRedis);
  const queue = new Queue(env.BOO_QUEUE, { connection: countsConnection, ...(prefix ? { prefix } : {}) });
  // Its errors are the connection's, counted by the listener above.
  queue.on('error', () => undefined);
  const server = await startMetricsServer({
    port: env.METRICS_PORT,
    register,
    logger,
    beforeScrape: async () => {
      const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'failed');
      for (const [state, count] of Object.entries(counts)) metrics.queueJobs.labels(state).set(count);
    },
  });
  const upkeep = () => runPartitionUpkeep(db, env.BOO_LOG_RETENTION_DAYS, logger, () => metrics.errors.labels('partitions').inc());
  await upkeep();
  const upkeepTimer = setInterval(() => void upkeep(), partitionUpkeepMs).unref();
  await consumer.waitUntilReady();
  await queue.waitUntilReady();
  await checkRedisPersistence(countsConnection, logger);
  logger.info({ queue: env.BOO_QUEUE, metricsPort: server.port, store: db.kind, replica }, 'worker ready');

  finish = async () => {
    clearInterval(upkeepTimer);
    await consumer.close();
    await Promise.allSettled([server.close(), queue.close()]);
    countsConnection.disconnect();
    await db.close();
  };
}

main().catch((err: unknown) => {
  process.stderr.write(`boo-worker: ${errorMessage(err)}\n`);
  process.exit(1);
});
