import { isIP } from 'node:net';
import { z } from 'zod';

const positiveMs = z.number().int().positive();

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/i, 'must be the sha256 of a key, 64 hex digits');

/** An IPv4/IPv6 address, or a subnet of either in CIDR notation. */
const addressOrSubnet = z.string().refine((value) => {
  const [address, prefix, ...rest] = value.split('/');
  if (rest.length > 0 || address === undefined) return false;
  const family = isIP(address);
  if (family === 0) return false;
  if (prefix === undefined) return true;
  const bits = Number(prefix);
  return /^\d+$/.test(prefix) && bits <= (family === 4 ? 32 : 128);
}, 'must be an IP address or a CIDR subnet such as 10.0.0.0/8');

export const timeoutsSchema = z.strictObject({
  /** TCP connect to the upstream. */
  connectMs: positiveMs.default(2_000),
  /** From sending the request to the first body byte of the answer; failover is still possible. */
  firstByteMs: positiveMs.default(120_000),
  /** Longest silence between two body chunks once the answer is flowing. */
  idleMs: positiveMs.default(60_000),
  /** Whole request, first byte to last. */
  totalMs: positiveMs.default(600_000),
});

const providerSchema = z.strictObject({
  baseUrl: z
    .url({ protocol: /^https?$/, error: 'must be an http(s) URL' })
    .refine((url) => !URL.canParse(url) || (new URL(url).search === '' && new URL(url).hash === ''), 'must not carry a query or fragment')
    // Undici would drop them silently: a key belongs in apiKeyEnv, sent as a bearer token.
    .refine(
      (url) => !URL.canParse(url) || (new URL(url).username === '' && new URL(url).password === ''),
      'must not carry user:password@ (not sent upstream); put a key in apiKeyEnv',
    ),
  type: z.enum(['llama-swap', 'openai']).default('openai'),
  apiKeyEnv: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name')
    .optional(),
  /** Overrides of the global `timeouts`, key by key. */
  timeouts: z.strictObject({ connectMs: positiveMs, firstByteMs: positiveMs, idleMs: positiveMs, totalMs: positiveMs }).partial().optional(),
  /** Keep-alive connections to this provider, per gateway process. */
  maxConnections: z.number().int().positive().default(128),
  /** Models served, in addition to those discovered from the provider's /v1/models. */
  models: z.array(z.string().min(1)).default([]),
  /**
   * How this provider is asked to continue a chat answer another one began (resume): `prefill`
   * (a final assistant message is continued, as llama.cpp's server does), `continue_final_message`
   * (vLLM, SGLang: that flag and `add_generation_prompt: false`), or `none` (it cannot; it is
   * skipped for chat resumes). Default: `prefill` on llama-swap, `none` otherwise.
   */
  continuation: z.enum(['prefill', 'continue_final_message', 'none']).optional(),
});

const candidateSchema = z.union([z.string(), z.strictObject({ target: z.string(), weight: z.number().positive().default(1) })]);

const virtualModelSchema = z.strictObject({
  strategy: z.enum(['priority', 'round-robin', 'weighted', 'least-latency']).default('priority'),
  preferLoaded: z.boolean().default(true),
  candidates: z.array(candidateSchema).min(1, 'needs at least one candidate'),
  /**
   * A chat or completions stream that breaks after its first byte continues on the next
   * candidate, up to this many times, the text already delivered given to it to continue from.
   */
  resume: z.strictObject({ maxResumes: z.number().int().min(0).max(10).default(0) }).prefault({}),
});

export const configFileSchema = z.strictObject({
  providers: z.record(z.string().regex(/^[A-Za-z0-9._-]+$/, 'provider names use letters, digits, ".", "_" and "-"'), providerSchema),
  virtualModels: z.record(z.string().min(1), virtualModelSchema).default({}),
  exposeConcreteModels: z.boolean().default(true),
  /**
   * Peers (load balancers) whose X-Forwarded-For and X-Forwarded-Proto are believed and
   * extended; from any other peer those headers are dropped and set anew.
   */
  trustedProxies: z.array(addressOrSubnet).default([]),
  timeouts: timeoutsSchema.prefault({}),
  breaker: z
    .strictObject({
      errorThresholdPercentage: z.number().min(1).max(100).default(50),
      volumeThreshold: z.number().int().min(1).default(3),
      rollingCountTimeoutMs: positiveMs.default(10_000),
      resetTimeoutMs: positiveMs.default(15_000),
    })
    .prefault({}),
  healthCheck: z
    .strictObject({
      intervalMs: positiveMs.default(5_000),
      timeoutMs: positiveMs.default(2_000),
    })
    .prefault({}),
  auth: z
    .strictObject({
      apiKeys: z.array(sha256Hex).default([]),
      /** Keys that may also read /admin/*; accepted wherever a client key is. */
      adminKeys: z.array(sha256Hex).default([]),
    })
    .prefault({}),
  limits: z
    .strictObject({
      maxBodyBytes: z
        .number()
        .int()
        .positive()
        .default(10 * 1024 * 1024),
      /** Slow-header clients (slowloris) are cut off after this long. */
      headersTimeoutMs: positiveMs.default(30_000),
      /** Whole client request including a long stream; keep it above timeouts.totalMs. */
      requestTimeoutMs: positiveMs.default(900_000),
      /**
       * How long a client may leave an answer unread (the upstream is held paused meanwhile)
       * before the gateway gives up on it: recorded as client_closed, never held against the upstream.
       */
      clientWriteTimeoutMs: positiveMs.default(120_000),
      /**
       * An answer that is not a stream is held until its end, up to this size, before it goes to
       * the client: one that breaks before its end fails over as one that broke before its first
       * byte. A longer one is relayed as it comes (0: never held).
       */
      holdAnswerBytes: z
        .number()
        .int()
        .min(0)
        .default(4 * 1024 * 1024),
      /** Deepest nesting of objects and arrays in a request body; deeper bodies get 400 json_too_deep. */
      maxJsonDepth: z.number().int().min(2).max(1_000).default(64),
    })
    .prefault({}),
  shutdown: z
    .strictObject({
      /**
       * On SIGTERM: how long the gateway reports not-ready on /readyz while it still accepts
       * requests, so that a load balancer takes it out before it stops listening.
       */
      graceMs: z.number().int().min(0).default(5_000),
      /** Then: how long requests in flight (long streams) may run on before their sockets are cut. */
      drainMs: positiveMs.default(30_000),
    })
    .prefault({}),
  events: z
    .strictObject({
      /** Events held in memory on their way to the queue or the in-process writer. */
      maxBuffered: z.number().int().positive().default(100_000),
      /** Upper bound of the spool file; beyond it events are dropped and counted. */
      spoolMaxBytes: z
        .number()
        .int()
        .positive()
        .default(256 * 1024 * 1024),
      /** Worker batch (one insert statement), in events; also the producer's events per `addBulk`. */
      batchSize: z.number().int().positive().default(1_000),
      batchMaxWaitMs: positiveMs.default(200),
      /**
       * Events packed into one BullMQ job: each job costs Redis two Lua scripts and the gateway
       * a BullMQ add whatever its size. 1,000 rather than 200 took 3 % off the gateway's
       * instructions per request under load (`npm run bench:instructions`, two runs each).
       */
      eventsPerJob: z.number().int().positive().max(1_000).default(1_000),
      /**
       * Longest an event waits in the gateway before it is sent to the queue; a full job
       * (`eventsPerJob` events) is sent at once. Every send costs a pipeline and a Lua call
       * whatever it carries, so sending less often is cheaper per event.
       */
      flushMs: positiveMs.default(100),
    })
    .prefault({}),
});

export type ConfigFile = z.infer<typeof configFileSchema>;
export type Timeouts = z.infer<typeof timeoutsSchema>;

export const envSchema = z.object({
  BOO_CONFIG: z.string().min(1).optional(),
  PORT: z.coerce.number().int().min(0).max(65_535).default(4000),
  HOST: z.string().min(1).default('0.0.0.0'),
  REDIS_URL: z.url({ protocol: /^rediss?$/, error: 'must be a redis:// or rediss:// URL' }).optional(),
  DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/, error: 'must be a postgres:// URL' }).optional(),
  BOO_DATA_DIR: z.string().min(1).default('./data'),
  BOO_REPLICA_ID: z.string().min(1).optional(),
  METRICS_PORT: z.coerce.number().int().min(0).max(65_535).default(9465),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Queue name; tests give each run its own. */
  BOO_QUEUE: z.string().min(1).default('boo-dispatch-events'),
  /** Worker: how long a job's lock lives without renewal; a killed worker's jobs are retried after about twice this. */
  BOO_WORKER_LOCK_MS: z.coerce.number().int().min(1_000).default(30_000),
});

export type Env = z.infer<typeof envSchema>;
