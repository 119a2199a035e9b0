import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { InvalidRequestError } from '../errors.js';
import type { DispatchRequest, Failover } from '../dispatch/failover.js';
import { RequestBody } from '../dispatch/request-body.js';
import { estimateRequiredContext } from '../routing/estimate-context.js';
import { sanitizeClientText, type Logger } from '../shared/logger.js';
import type { RequestContext } from './middleware/request-context.js';

// Model names reach upstream bodies and logs: printable, bounded.
const controlCharacter = /[\u0000-\u001f\u007f]/;

function invalidType(param: string, expected: string): InvalidRequestError {
  return new InvalidRequestError(`${param}: Invalid input: expected ${expected}`, param, 'invalid_type');
}

function checkModel(value: unknown): string {
  const fail = (message: string) => new InvalidRequestError(`model: ${message}`, 'model', 'missing_model');
  if (typeof value !== 'string') throw fail('is required and must be a string');
  if (value.length === 0) throw fail('must not be empty');
  if (value.length > 256) throw fail('is longer than 256 characters');
  if (controlCharacter.test(value)) throw fail('must not contain control characters');
  return value;
}

function checkCount(document: Record<string, unknown>, param: string): void {
  const value = document[param];
  if (value === undefined || value === null) return;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) throw invalidType(param, 'a non-negative integer');
}

/**
 * The fields the gateway reads, checked by hand (this runs on every request); the rest of the
 * body passes through untouched, as bytes.
 */
export function parseDispatchBody(raw: unknown): { body: RequestBody; model: string; stream: boolean; requiredContext: number } {
  if (!Buffer.isBuffer(raw) || raw.length === 0) throw new InvalidRequestError('request body must be a JSON object', null, 'invalid_body');
  let document: unknown;
  try {
    document = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new InvalidRequestError('request body is not valid JSON', null, 'invalid_json');
  }
  if (typeof document !== 'object' || document === null || Array.isArray(document)) {
    throw new InvalidRequestError('request body must be a JSON object', null, 'invalid_body');
  }
  const fields = document as Record<string, unknown>;
  const model = checkModel(fields.model);
  const stream = fields.stream;
  if (stream !== undefined && stream !== null && typeof stream !== 'boolean') throw invalidType('stream', 'boolean');
  checkCount(fields, 'max_tokens');
  checkCount(fields, 'max_completion_tokens');
  if (fields.messages !== undefined && !Array.isArray(fields.messages)) throw invalidType('messages', 'array');
  // Estimated now, while the document is at hand: a walk of the messages, far cheaper than the
  // parse, and the document need not outlive this function (see RequestBody).
  return { body: new RequestBody(raw, fields, model), model, stream: stream === true, requiredContext: estimateRequiredContext(fields) };
}

/**
 * A client's dispatch request as the dispatcher reads it. A class, not an object literal with a
 * `logger` getter: V8 defines a literal's accessor at run time, which turned every request's
 * object into a slow dictionary (about 4,000 instructions a request, by callgrind, and every
 * later read of it a hash lookup). The child logger is still made only when something logs.
 */
class ClientDispatchRequest implements DispatchRequest {
  readonly headers: IncomingHttpHeaders;
  readonly source: string | null;

  constructor(
    readonly endpoint: string,
    readonly model: string,
    readonly stream: boolean,
    readonly body: RequestBody,
    readonly requiredContext: number,
    req: IncomingMessage,
    readonly client: RequestContext,
  ) {
    this.headers = req.headers;
    const source = req.headers['x-boo-source'];
    this.source = typeof source === 'string' ? sanitizeClientText(source) : null;
  }

  get requestId(): string {
    return this.client.requestId;
  }

  get receivedAt(): number {
    return this.client.receivedAt;
  }

  get logger(): Logger {
    return this.client.logger;
  }
}

/** Parses one dispatch request's raw body and serves it with failover. Rejects only before anything was written. */
export async function serveDispatch(
  failover: Failover,
  endpoint: string,
  req: IncomingMessage,
  res: ServerResponse,
  context: RequestContext,
  raw: Buffer | undefined,
): Promise<void> {
  const { body, model, stream, requiredContext } = parseDispatchBody(raw);
  await failover.serve(new ClientDispatchRequest(endpoint, model, stream, body, requiredContext, req, context), res);
}
