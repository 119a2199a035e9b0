import type { Request, Response } from 'express';
import { z } from 'zod';
import { InvalidRequestError } from '../../errors.js';
import type { DispatchWithFallback } from '../../dispatch/dispatch-with-fallback.js';
import type { HttpRoute } from '../../metrics/registry.js';
import { estimateRequiredContext } from '../../routing/estimate-context.js';
import { sanitizeClientText } from '../../shared/logger.js';
import { contextOf } from '../middleware/request-context.js';

// Model names reach upstream bodies and logs: printable, bounded.
const modelName = z
  .string({ error: 'is required and must be a string' })
  .min(1, 'must not be empty')
  .max(256, 'is longer than 256 characters')
  .regex(/^[^\u0000-\u001f\u007f]+$/, 'must not contain control characters');

const optionalCount = z.number().int().nonnegative().nullable().optional();

/** The fields the gateway reads; the rest of the body passes through untouched. */
const dispatchBody = z.looseObject({
  model: modelName,
  stream: z.boolean().nullable().optional(),
  max_tokens: optionalCount,
  max_completion_tokens: optionalCount,
  messages: z.array(z.unknown()).optional(),
});

function parseBody(raw: unknown): z.infer<typeof dispatchBody> {
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
  const result = dispatchBody.safeParse(document);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const param = issue.path.join('.') || 'body';
    throw new InvalidRequestError(`${param}: ${issue.message}`, param, param === 'model' ? 'missing_model' : 'invalid_type');
  }
  return result.data;
}

/** POST /v1/chat/completions, /v1/completions, /v1/embeddings: parse, then dispatch with failover. */
export function dispatchRoute(dispatcher: DispatchWithFallback, endpoint: string, route: HttpRoute) {
  return async (req: Request, res: Response): Promise<void> => {
    const context = contextOf(res);
    context.route = route;
    const body = parseBody(req.body);
    const source = req.headers['x-boo-source'];
    await dispatcher.handle(
      {
        endpoint,
        model: body.model,
        stream: body.stream === true,
        body,
        headers: req.headers,
        requestId: context.requestId,
        source: typeof source === 'string' ? sanitizeClientText(source) : null,
        receivedAt: context.receivedAt,
        clientSignal: context.clientSignal,
        logger: context.logger,
        requiredContext: () => estimateRequiredContext(body),
      },
      res,
    );
  };
}
