import { isIP } from 'node:net';
import { z } from 'zod';

const positiveMs = z.number().int().positive();

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/i, 'must be the sha256 of a key, 64 hex digits');

/**
 * Requests in flight at once to a provider or a candidate, across every replica. A bound of what
 * the hardware takes, so at least 1 and a plain integer.
 */
const maxInFlight = z.number().int().min(1, 'must be at least 1');

/**
 * A name that becomes a metric label value and a log column (`key_name`, a source): short, and
 * of a charset no exposition or log format has to escape.
 */
const labelSafePattern = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;
const labelSafeMessage = 'use 1 to 64 letters, digits, ".", "_", ":" and "-", starting with a letter or digit';
const labelSafeName = z.string().regex(labelSafePattern, labelSafeMessage);

/** Per-minute allowances of a key or a source; at least one of the two. */
const rateLimits = z
  .strictObject({
    requestsPerMinute: z.number().int().min(1).optional(),
    /** Prompt plus completion tokens: estimated at admission, corrected by the usage the upstream reports. */
    tokensPerMinute: z.number().int().min(1).optional(),
  })
  .refine((limits) => limits.requestsPerMinute !== undefined || limits.tokensPerMinute !== undefined, 'set requestsPerMinute, tokensPerMinute or both');

/** An accepted client key: its sha256 alone, or with a name (recorded, never the key) and optional rate limits. */
const apiKeyEntry = z.union(
  [
    sha256Hex,
    z.strictObject({
      sha256: sha256Hex,
      name: labelSafeName,
      requestsPerMinute: z.number().int().min(1).optional(),
      tokensPerMinute: z.number().int().min(1).optional(),
    }),
  ],
  { error: 'must be the sha256 of a key (64 hex digits) or { sha256, name, requestsPerMinute?, tokensPerMinute? }' },
);

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
  /** Requests in flight to this provider at once, whichever of its models, across the cluster. */
  maxInFlight: maxInFlight.optional(),
});

const candidateSchema = z.union([
  z.string(),
  z.strictObject({
    target: z.string(),
    weight: z.number().positive().default(1),
    /** Requests in flight to this candidate at once, across the cluster; it belongs to the candidate wherever it is used. */
    maxInFlight: maxInFlight.optional(),
  }),
]);

const virtualModelSchema = z.strictObject({
  strategy: z.enum(['priority', 'round-robin', 'weighted', 'least-latency']).default('priority'),
  preferLoaded: z.boolean().default(true),
  candidates: z.array(candidateSchema).min(1, 'needs at least one candidate'),
  /**
   * A chat or completions stream that breaks after its first byte continues on the next
   * candidate, up to this many times, the text already delivered given to it to continue from.
   */
  resume: z.strictObject({ maxResumes: z.number().int().min(0).max(10).default(0) }).prefault({}),
  /** Absent: no line; a request that no candidate can take now fails as before. */
  queue: z
    .strictObject({
      /** Longest wait in line; then 429 capacity_exceeded (status queue_timeout). */
      maxWaitMs: positiveMs.default(30_000),
      /** Requests waiting at once on each replica; one more gets 429 capacity_exceeded at once (status rejected). */
      maxQueued: z.number().int().min(1).default(100),
    })
    .optional(),
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
      apiKeys: z.array(apiKeyEntry).default([]),
      /** Keys that may also read /admin/*; accepted wherever a client key is. */
      adminKeys: z.array(sha256Hex).default([]),
    })
    .superRefine((auth, context) => {
      // A name identifies a key in metrics, logs and its rate limit: two keys may not share one.
      const firstWith = new Map<string, number>();
      auth.apiKeys.forEach((entry, index) => {
        if (typeof entry === 'string') return;
        const first = firstWith.get(entry.name);
        if (first === undefined) firstWith.set(entry.name, index);
        else context.addIssue({ code: 'custom', path: ['apiKeys', index, 'name'], message: `"${entry.name}" is already the name of auth.apiKeys[${first}]` });
      });
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
      /** Rate limits per `X-Boo-Source` value, shared by every replica; sources not listed are not limited. */
      sources: z
        .record(z.string(), rateLimits)
        // Checked here rather than as the record's key schema, whose own message zod replaces with "Invalid key in record".
        .superRefine((sources, context) => {
          for (const name of Object.keys(sources))
            if (!labelSafePattern.test(name)) context.addIssue({ code: 'custom', path: [name], message: labelSafeMessage });
        })
        .default({}),
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
  /**
   * The dispatch event queue on a Redis Cluster: seed nodes as `host:port,host:port`. Takes the
   * place of REDIS_URL for the queue only; breakers and capacity need a single Redis (REDIS_URL).
   */
  BOO_REDIS_CLUSTER: z
    .string()
    .regex(/^\s*[^,\s]+:\d{1,5}\s*(,\s*[^,\s]+:\d{1,5}\s*)*$/, { error: 'must be host:port[,host:port...]' })
    .optional(),
  DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/, error: 'must be a postgres:// URL' }).optional(),
  BOO_DATA_DIR: z.string().min(1).default('./data'),
  BOO_REPLICA_ID: z.string().min(1).optional(),
  METRICS_PORT: z.coerce.number().int().min(0).max(65_535).default(9465),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Queue name; tests give each run its own. */
  BOO_QUEUE: z.string().min(1).default('boo-dispatch-events'),
  /**
   * Worker: how long a job's lock lives without renewal (the worker renews it every half of this);
   * a killed worker's jobs are back in the queue within this plus the stalled check's 2 s.
   */
  BOO_WORKER_LOCK_MS: z.coerce.number().int().min(1_000).default(5_000),
  /** Worker: days of `route_dispatch_log` kept before today (UTC); older daily partitions are dropped. */
  BOO_LOG_RETENTION_DAYS: z.coerce.number().int().min(1).default(30),
});

export type Env = z.infer<typeof envSchema>;
