import { join } from 'node:path';
import type { Registry } from 'prom-client';
import type { Config } from './config/load.js';
import type { Env } from './config/schema.js';
import { createDispatchLogRepository } from './dispatch-log/dispatch-log-repository.js';
import { DispatchLogWriter } from './dispatch-log/dispatch-log-writer.js';
import { EmbeddedStore } from './dispatch-log/embedded-store.js';
import { migrate } from './dispatch-log/migrate.js';
import { partitionUpkeepMs, runPartitionUpkeep } from './dispatch-log/partitions.js';
import { createPostgresDatabase, embeddedStoreDirectory, type SqlDatabase } from './dispatch-log/sql-database.js';
import { writeBatch } from './dispatch-log/write-batch.js';
import { createDispatchLogMetrics, type GatewayMetrics } from './metrics/registry.js';
import type { Logger } from './shared/logger.js';
import { BullmqSink } from './events/bullmq-sink.js';
import type { ComponentHealth, EventSink } from './events/event-sink.js';
import { InProcessSink } from './events/in-process-sink.js';
import { Spool } from './events/spool.js';
import { queueRedisOf } from './events/queue-connection.js';
import { errorMessage } from './shared/error-message.js';

export interface EventSinkDeps {
  env: Env;
  config: Config;
  logger: Logger;
  metrics: GatewayMetrics;
  register: Registry;
}

/**
 * Builds the gateway's event sink from the environment:
 * - `REDIS_URL` set: BullMQ producer with a spool under `BOO_DATA_DIR/spool` (the worker writes rows);
 * - unset: the batch writer in this process, into `DATABASE_URL` or, unset, PGlite under
 *   `BOO_DATA_DIR/pglite` in a thread of its own, opened and migrated with the first event
 *   (see `EmbeddedStore`). At the writer's memory bound, events go to the spool. The writer keeps
 *   the daily partitions and `BOO_LOG_RETENTION_DAYS`, as the worker does in production.
 * Opens no connection the caller did not ask for by setting these variables.
 * @throws when the embedded store or the spool cannot be opened (local disk problems).
 */
export async function createEventSink(deps: EventSinkDeps): Promise<EventSink> {
  const { env, config, logger, metrics, register } = deps;
  const log = logger.child({ component: 'dispatch-log' });
  const spool = await Spool.open({
    directory: join(env.BOO_DATA_DIR, 'spool'),
    maxBytes: config.events.spoolMaxBytes,
    observeFsync: (seconds) => metrics.spoolFsyncSeconds.observe(seconds),
  });

  const queueRedis = queueRedisOf(env);
  if (queueRedis) {
    const probe = env.DATABASE_URL
      ? startDatabaseProbe(createPostgresDatabase(env.DATABASE_URL, log, { maxConnections: 1, applicationName: 'boo-gateway-probe' }), log)
      : undefined;
    const sink = new BullmqSink({
      ...queueRedis,
      queueName: env.BOO_QUEUE,
      spool,
      metrics,
      logger: log,
      maxBuffered: config.events.maxBuffered,
      chunkSize: config.events.batchSize,
      eventsPerJob: config.events.eventsPerJob,
      flushDelayMs: config.events.flushMs,
      ...(probe ? { databaseHealth: probe.health } : {}),
    });
    if (!probe) return sink;
    return {
      publish: (event) => sink.publish(event),
      health: () => sink.health(),
      close: async () => {
        await Promise.all([sink.close(), probe.stop()]);
      },
    };
  }

  // The writer's memory is the gateway's: beyond a few batches, events wait in the spool on disk.
  const maxBuffered = Math.min(config.events.maxBuffered, embeddedBatchesInMemory * config.events.batchSize);
  const writerMetrics = createDispatchLogMetrics(register);
  // No worker keeps the partitions in these modes: the writer does, between batches.
  const upkeepOf = (db: SqlDatabase) => ({
    run: () => runPartitionUpkeep(db, env.BOO_LOG_RETENTION_DAYS, log, () => writerMetrics.errors.labels('partitions').inc()),
    everyMs: partitionUpkeepMs,
  });
  const writerOptions = {
    metrics: writerMetrics,
    logger: log,
    batchSize: config.events.batchSize,
    batchMaxWaitMs: config.events.batchMaxWaitMs,
    maxBuffered,
  };
  if (!env.DATABASE_URL) {
    // Nothing of the store is opened here: it opens in its own thread with the first event to write.
    const store = new EmbeddedStore({
      directory: embeddedStoreDirectory(env.BOO_DATA_DIR),
      logger: log,
      idleCloseMs: embeddedStoreIdleCloseMs,
      onOpenChange: (open) => metrics.embeddedStoreOpen.set(open ? 1 : 0),
    });
    const writer = new DispatchLogWriter({
      ...writerOptions,
      write: (events) => store.writeEvents(events),
      validate: false,
      prepare: async () => {
        await migrate(store, log);
      },
      upkeep: upkeepOf(store),
    });
    return new InProcessSink({ writer, db: store, spool, metrics, logger: log, chunkSize: config.events.batchSize });
  }

  // A Postgres may be down at start: events wait in the writer until it is migrated.
  const db = createPostgresDatabase(env.DATABASE_URL, log, { applicationName: 'boo-gateway' });
  let migration: Promise<void> | undefined;
  const ensureMigrated = () =>
    (migration ??= migrate(db, log).then(
      () => undefined,
      (err: unknown) => {
        migration = undefined;
        throw err;
      },
    ));
  ensureMigrated().catch((err: unknown) => log.warn({ err }, 'dispatch log: migration at start failed; retrying before the first insert'));
  const repository = createDispatchLogRepository(db);
  const writer = new DispatchLogWriter({ ...writerOptions, write: (events) => writeBatch(repository, events), prepare: ensureMigrated, upkeep: upkeepOf(db) });
  return new InProcessSink({ writer, db, spool, metrics, logger: log, chunkSize: config.events.batchSize });
}

/** Batches of events the in-process writer holds in memory at most (`events.maxBuffered` if lower). */
const embeddedBatchesInMemory = 10;

/**
 * The embedded store closes after a minute without writes: open, it holds 170-190 MB (about half
 * of which goes back when it closes) and it takes under a second of CPU to reopen, so a gateway
 * that serves now and then pays for most of the store only while it serves.
 */
const embeddedStoreIdleCloseMs = 60_000;

/** Pings the database every `intervalMs` so `/readyz` can say whether the log's store is up. */
function startDatabaseProbe(db: SqlDatabase, logger: Logger, intervalMs = 10_000): { health: () => ComponentHealth; stop: () => Promise<void> } {
  let health: ComponentHealth = 'degraded';
  const ping = () =>
    db.query('SELECT 1').then(
      () => {
        health = 'ok';
      },
      (err: unknown) => {
        if (health === 'ok') logger.warn({ err: errorMessage(err) }, 'database unreachable');
        health = 'degraded';
      },
    );
  void ping();
  const timer = setInterval(() => void ping(), intervalMs).unref();
  return {
    health: () => health,
    stop: async () => {
      clearInterval(timer);
      await db.close(1_000);
    },
  };
}
