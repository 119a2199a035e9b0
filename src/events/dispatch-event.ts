import { z } from 'zod';
import { attemptOutcomes, dispatchStatuses } from '../shared/dispatch-outcomes.js';

export { attemptOutcomes, dispatchStatuses, type AttemptOutcome, type DispatchStatus } from '../shared/dispatch-outcomes.js';

export const attemptSchema = z.object({
  candidate: z.string(),
  outcome: z.enum(attemptOutcomes),
  http_status: z.number().int().nullable(),
  ms: z.number().int().nonnegative(),
});
export type Attempt = z.infer<typeof attemptSchema>;

/**
 * One dispatch, as it travels from the gateway to `route_dispatch_log`. Field names are the
 * table's columns. It never carries prompts, completions or keys: job data sits in Redis in clear.
 */
export const dispatchEventSchema = z.object({
  id: z.uuid(),
  created_at: z.iso.datetime({ offset: true }),
  request_id: z.string().max(200),
  requested_model: z.string().max(500),
  virtual_model: z.string().max(500).nullable(),
  chosen_provider_id: z.string().nullable(),
  chosen_model: z.string().nullable(),
  candidates_tried: z.array(z.string()),
  attempts: z.array(attemptSchema),
  status: z.enum(dispatchStatuses),
  source: z.string().max(200).nullable(),
  error: z.string().max(2000).nullable(),
  duration_ms: z.number().int().nonnegative(),
  ttfb_ms: z.number().int().nonnegative().nullable(),
  stream: z.boolean(),
  prompt_tokens: z.number().int().nonnegative().nullable(),
  completion_tokens: z.number().int().nonnegative().nullable(),
  replica: z.string().max(200),
  /** The path served; null on events of gateways from before it was recorded. */
  endpoint: z.string().max(100).nullable().default(null),
  /** Continuations of a stream broken after its first byte, each an attempt with outcome `resumed`. */
  resumes: z.number().int().nonnegative().default(0),
  /** Time the request waited in its virtual model's line for a slot; 0 when it never waited. */
  queued_ms: z.number().int().nonnegative().default(0),
  /** The name of the client's key (`auth.apiKeys[].name`), never the key; null without a named key. */
  key_name: z.string().max(64).nullable().default(null),
});
export type DispatchEvent = z.infer<typeof dispatchEventSchema>;
