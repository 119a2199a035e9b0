import { watch } from 'node:fs';
import { hostname } from 'node:os';
import { basename, dirname, resolve } from 'node:path';
import { RedisBreakerStateStore } from './breakers/redis-breaker-state-store.js';
import { configPath } from './config/config-path.js';
import { loadConfigFile, loadEnv } from './config/load.js';
import { handleShutdownSignals } from './shared/shutdown-signals.js';
import { createEventSink } from './create-event-sink.js';
import { startGateway } from './gateway.js';
import { createLogger } from './shared/logger.js';
import { errorMessage } from './shared/error-message.js';

async function main(): Promise<void> {
  const env = loadEnv(process.env);
  const logger = createLogger(env.LOG_LEVEL);
  const path = configPath(env.BOO_CONFIG);
  const config = loadConfigFile(path, process.env);
  const replica = env.BOO_REPLICA_ID ?? `${hostname()}-${process.pid}`;
  const gateway = await startGateway({
    config,
    logger,
    replica,
    port: env.PORT,
    host: env.HOST,
    createSink: (metrics, register) => createEventSink({ env, config, logger, metrics, register }),
    ...(env.REDIS_URL ? { breakerStore: new RedisBreakerStateStore({ url: env.REDIS_URL, logger: logger.child({ component: 'breakers' }) }) } : {}),
    redisUrl: env.REDIS_URL,
  });
  if (env.BOO_REDIS_CLUSTER && !env.REDIS_URL) {
    logger.warn(
      'BOO_REDIS_CLUSTER: dispatch events go through the Redis Cluster, but breaker state and capacity slots are not shared on a cluster; without REDIS_URL (a single Redis) each replica keeps its own',
    );
  }
  logger.info({ url: gateway.url, config: path, replica }, 'boo-gateway listening');

  const reload = (why: string) => {
    try {
      gateway.reload(loadConfigFile(path, process.env));
    } catch (err: unknown) {
      logger.error({ reason: errorMessage(err), trigger: why }, 'config reload rejected; keeping the previous config');
    }
  };
  process.on('SIGHUP', () => reload('SIGHUP'));
  let debounce: NodeJS.Timeout | undefined;
  // Editors save by writing a new file and renaming it over the old one, which a watch on the
  // file itself would miss: watch its directory for its name.
  const file = basename(path);
  watch(dirname(resolve(path)), { persistent: false }, (_event, changed) => {
    if (changed !== file) return;
    clearTimeout(debounce);
    debounce = setTimeout(() => reload('file change'), 200);
  }).on('error', (err) => logger.warn({ err: err.message }, 'cannot watch the config file; SIGHUP still reloads'));

  // SIGTERM comes from an orchestrator, whose load balancer needs the grace period to take this
  // replica out; SIGINT from someone at a terminal, who wants it to stop now.
  const graceOf = (signal: NodeJS.Signals) => (signal === 'SIGTERM' ? gateway.config().shutdown.graceMs : 0);
  handleShutdownSignals({
    logger,
    close: (signal) => gateway.close(graceOf(signal)),
    deadlineMs: (signal) => graceOf(signal) + gateway.config().shutdown.drainMs + 15_000,
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`boo-gateway: ${errorMessage(err)}\n`);
  process.exit(1);
});
