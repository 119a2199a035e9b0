import { z } from 'zod';

const positiveMs = z.number().int().positive();

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
    .refine((url) => !URL.canParse(url) || (new URL(url).search === '' && new URL(url).hash === ''), 'must not carry a query or fragment'),
  type: z.enum(['llama-swap', 'openai']).default('openai'),
  apiKeyEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name').optional(),
  /** Overrides of the global `timeouts`, key by key. */
  timeouts: z
    .strictObject({ connectMs: positiveMs, firstByteMs: positiveMs, idleMs: positiveMs, totalMs: positiveMs })
    .partial()
    .optional(),
  /** Keep-alive connections to this provider, per gateway process. */
  maxConnections: z.number().int().positive().default(128),
  /** Models served, in addition to those discovered from the provider's /v1/models. */
  models: z.array(z.string().min(1)).default([]),
});

const candidateSchema = z.union([
  z.string(),
  z.strictObject({ target: z.string(), weight: z.number().positive().default(1) }),
]);

const virtualModelSchema = z.strictObject({
  strategy: z.enum(['priority', 'round-robin', 'weighted', 'least-latency']).default('priority'),
  preferLoaded: z.boolean().default(true),
  candidates: z.array(candidateSchema).min(1, 'needs at least one candidate'),
});

export const configFileSchema = z
  .strictObject({
    providers: z.record(
      z.string().regex(/^[A-Za-z0-9._-]+$/, 'provider names use letters, digits, ".", "_" and "-"'),
      providerSchema,
    ),
    virtualModels: z.record(z.string().min(1), virtualModelSchema).default({}),
    exposeConcreteModels: z.boolean().default(true),
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
        apiKeys: z.array(z.string().regex(/^[0-9a-f]{64}$/i, 'must be the sha256 of a key, 64 hex digits')).default([]),
      })
      .prefault({}),
    limits: z
      .strictObject({
        maxBodyBytes: z.number().int().positive().default(10 * 1024 * 1024),
        /** Slow-header clients (slowloris) are cut off after this long. */
        headersTimeoutMs: positiveMs.default(30_000),
        /** Whole client request including a long stream; keep it above timeouts.totalMs. */
        requestTimeoutMs: positiveMs.default(900_000),
        /** Deepest nesting of objects and arrays in a request body; deeper bodies get 400 json_too_deep. */
        maxJsonDepth: z.number().int().min(2).max(1_000).default(64),
      })
      .prefault({}),
    events: z
      .strictObject({
        /** Events held in memory on their way to the queue or the in-process writer. */
        maxBuffered: z.number().int().positive().default(100_000),
        /** Upper bound of the spool file; beyond it events are dropped and counted. */
        spoolMaxBytes: z.number().int().positive().default(256 * 1024 * 1024),
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
