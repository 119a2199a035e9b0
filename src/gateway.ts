import { createServer, STATUS_CODES, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Registry } from 'prom-client';
import { BreakerRegistry } from './breakers/breaker-registry.js';
import type { BreakerStateStore } from './breakers/breaker-state-store.js';
import { SharedBreakers } from './breakers/shared-breakers.js';
import type { Config } from './config/load.js';
import { Capacity } from './capacity/capacity.js';
import { Failover } from './dispatch/failover.js';
import { GatewayError, toOpenAIError } from './errors.js';
import { UpstreamPassthrough } from './dispatch/upstream-passthrough.js';
import type { EventSink } from './events/event-sink.js';
import { FleetState } from './fleet/fleet-state.js';
import { HealthChecker } from './fleet/health-checker.js';
import { createApp } from './http/app.js';
import { RoutePlanner } from './routing/route-planner.js';
import { LlamaSwapClient } from './upstream/llama-swap-client.js';
import { UpstreamPools } from './upstream/upstream-pools.js';
import { breakerStateValue, createGatewayMetrics, createMetricsRegistry, initConfigSeries, type GatewayMetrics } from './metrics/registry.js';
import type { Logger } from './shared/logger.js';

export interface GatewayOptions {
  readonly config: Config;
  readonly logger: Logger;
  readonly replica: string;
  readonly port: number;
  readonly host: string;
  /** Builds the event sink once metrics exist (the sink counts into them). */
  readonly createSink: (metrics: GatewayMetrics, register: Registry) => Promise<EventSink> | EventSink;
  /** How long in-flight requests may run on at shutdown before their sockets are cut; default `shutdown.drainMs`. */
  readonly drainTimeoutMs?: number;
  /** Start the periodic health checks (tests of routing switch them off to script the fleet). */
  readonly healthChecks?: boolean;
  /** Uniform in [0, 1) for weighted choice and exploration; tests seed it. */
  readonly random?: () => number;
  /** Shares breaker state with the other replicas (REDIS_URL); absent, breakers are local to the process. */
  readonly breakerStore?: BreakerStateStore;
  /** Shares slots and rate limits with the other replicas; absent, each process counts alone (docs/capacity.md). */
  readonly redisUrl?: string | undefined;
}

export interface Gateway {
  readonly url: string;
  readonly server: Server;
  readonly fleet: FleetState;
  readonly breakers: BreakerRegistry;
  readonly healthChecker: HealthChecker;
  readonly register: Registry;
  config(): Config;
  /** Applies a new, already validated config without dropping requests in flight. */
  reload(config: Config): void;
  /**
   * Shuts down: reports not-ready at once and keeps accepting for `graceMs` (so a load balancer
   * takes this replica out first), then stops accepting, lets in-flight requests finish
   * (bounded), flushes events. Idempotent.
   */
  close(graceMs?: number): Promise<void>;
}

const clientErrorStatus: Record<string, [number, string]> = {
  HPE_HEADER_OVERFLOW: [431, 'request headers are too large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'request was not received in time'],
  ERR_HTTP_HEADERS_TIMEOUT: [408, 'request headers were not received in time'],
};

/** Answers what Node's HTTP parser refused (bad framing, huge or slow headers) in the OpenAI shape. */
function answerClientError(error: NodeJS.ErrnoException, socket: Socket): void {
  if (!socket.writable || (error.code === 'ECONNRESET' && socket.destroyed)) {
    socket.destroy();
    return;
  }
  const [status, message] = clientErrorStatus[error.code ?? ''] ?? [400, 'malformed HTTP request'];
  const body = JSON.stringify(toOpenAIError(new GatewayError(message, { code: error.code ?? 'bad_request', status, openaiType: 'invalid_request_error' })));
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n` +
      `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** Builds every part of the gateway process from a config and starts listening. */
export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const { logger, replica } = options;
  let config = options.config;
  const getConfig = () => config;
  const register = createMetricsRegistry(replica);
  const metrics = createGatewayMetrics(register, config);
  const sink = await options.createSink(metrics, register);
  const fleet = new FleetState();
  const pools = new UpstreamPools(config.providers);
  const breakers = new BreakerRegistry(config.breaker);
  breakers.on('transition', ({ candidate, to, origin }) => {
    metrics.breakerState.labels(candidate).set(breakerStateValue[to]);
    metrics.breakerTransitions.labels(candidate, to, origin).inc();
    logger.warn({ candidate, state: to, origin }, 'circuit breaker changed state');
  });
  const shared = options.breakerStore
    ? new SharedBreakers({
        breakers,
        store: options.breakerStore,
        fleet,
        config: getConfig,
        logger: logger.child({ component: 'breakers' }),
        replica,
      })
    : undefined;
  // Before listening: the first request already skips the breakers open elsewhere.
  await shared?.start();
  const planner = new RoutePlanner({ config: getConfig, fleet, breakers, ...(options.random ? { random: options.random } : {}) });
  const capacity = new Capacity({
    config: getConfig,
    logger: logger.child({ component: 'capacity' }),
    redisUrl: options.redisUrl,
    metrics,
    // A slot held longer than any request can last is a leak, taken back and logged.
    slots: { maxHoldMs: config.timeouts.totalMs + config.limits.clientWriteTimeoutMs + 60_000 },
  });
  await capacity.start();
  const failover = new Failover({ config: getConfig, planner, fleet, breakers, pools, metrics, sink, replica, capacity });
  const llamaSwap = new LlamaSwapClient(pools);
  const passthrough = new UpstreamPassthrough({ config: getConfig, fleet, client: llamaSwap, planner, logger });
  const healthChecker = new HealthChecker({ config: getConfig, client: llamaSwap, fleet, metrics, logger });

  // The one view of Redis and the database, for /readyz and for boo_redis_up at each scrape.
  const backingServices = () => {
    const sinkHealth = sink.health();
    return { ...sinkHealth, redis: shared && !shared.available ? 'degraded' : sinkHealth.redis };
  };
  let draining = false;
  const app = createApp({
    config: getConfig,
    fleet,
    breakers,
    failover,
    passthrough,
    register,
    metrics,
    logger,
    backingServices,
    draining: () => draining,
  });
  const server = createServer(
    {
      headersTimeout: config.limits.headersTimeoutMs,
      requestTimeout: config.limits.requestTimeoutMs,
      keepAliveTimeout: 65_000,
      // Node checks the header and request timeouts on this sweep (30 s by default), which would
      // let a slow-header client hold a socket for twice headersTimeoutMs.
      connectionsCheckingInterval: Math.min(1_000, config.limits.headersTimeoutMs),
      // Checked in the app, which answers in the OpenAI shape where node:http sends a bare 400.
      requireHostHeader: false,
    },
    app,
  );
  server.on('clientError', answerClientError);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // A deep backlog: bursts of new streams arrive while the event loop relays others, and the
    // default 511 overflowed at 2,000 new streams/s in the bench (connections reset by the kernel).
    server.listen({ port: options.port, host: options.host, backlog: 4096 }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  if (options.healthChecks !== false) healthChecker.start();
  const { port } = server.address() as AddressInfo;
  const url = `http://${options.host === '0.0.0.0' || options.host === '::' ? '127.0.0.1' : options.host}:${port}`;
  if (config.apiKeyDigests.length === 0) logger.warn('auth.apiKeys is empty: every client is accepted');
  else if (config.adminKeyDigests.length === 0) logger.warn('auth.adminKeys is empty: /admin/* answers 403 to every key');

  let closing: Promise<void> | undefined;
  const close = (graceMs = 0) => {
    closing ??= (async () => {
      draining = true;
      if (graceMs > 0) {
        logger.info({ graceMs }, 'shutting down: not ready, still accepting for the grace period');
        await new Promise((resolve) => setTimeout(resolve, graceMs));
      }
      const drained = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const timeout = options.drainTimeoutMs ?? config.shutdown.drainMs;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([drained, new Promise<void>((resolve) => (timer = setTimeout(resolve, timeout)))]);
      clearTimeout(timer);
      server.closeAllConnections();
      // Waiters still in line get 503; leases and budgets go back for the other replicas.
      await capacity.close();
      await healthChecker.stop();
      await sink.close();
      await pools.close();
      await shared?.close();
      breakers.shutdown();
    })();
    return closing;
  };

  return {
    url,
    server,
    fleet,
    breakers,
    healthChecker,
    register,
    config: getConfig,
    reload(next: Config) {
      pools.reconfigure(next.providers);
      breakers.reconfigure(next.breaker);
      initConfigSeries(metrics, next, config);
      config = next;
      logger.info({ path: next.path }, 'config reloaded');
    },
    close,
  };
}
