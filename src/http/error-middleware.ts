import type { ServerResponse } from 'node:http';
import type { NextFunction, Request, Response } from 'express';
import { GatewayError } from '../errors.js';
import type { ErrorShape } from '../protocols/endpoints.js';
import { errorBody } from '../protocols/error-bodies.js';
import { contextOf } from './middleware/request-context.js';
import type { Logger } from '../shared/logger.js';

/** Errors of Express carry an HTTP `status` (e.g. a malformed percent-encoding in the path). */
function fromFrameworkError(error: unknown): GatewayError | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const { status } = error as { status?: unknown };
  if (typeof status === 'number' && status >= 400 && status < 500) {
    const message = error instanceof Error ? error.message : 'bad request';
    return new GatewayError(message, { code: 'invalid_request', status, openaiType: 'invalid_request_error' });
  }
  return undefined;
}

/**
 * The one place where errors become HTTP: GatewayError -> its status and error body (OpenAI's
 * shape, or Anthropic's on `/v1/messages*`); anything else -> 500 with a generic message and the
 * full error logged (on `logger`, the request's own when there is one). Used by the Express error
 * middleware and by the dispatch fast path alike.
 */
export function sendError(res: ServerResponse, error: unknown, logger: () => Logger, shape: ErrorShape = 'openai'): void {
  let gatewayError: GatewayError;
  if (error instanceof GatewayError) {
    gatewayError = error;
  } else {
    gatewayError = fromFrameworkError(error) ?? new GatewayError('internal error', { code: 'internal_error', status: 500, openaiType: 'api_error' });
    if (gatewayError.status === 500) logger().error({ err: error }, 'unhandled error');
  }
  if (res.headersSent) {
    // Nothing sensible can follow bytes already sent: end the exchange.
    res.destroy();
    return;
  }
  const body = JSON.stringify(errorBody(gatewayError, shape));
  res.writeHead(gatewayError.status, { ...gatewayError.headers, 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** {@link sendError} as the Express error middleware. */
export function errorMiddleware(logger: Logger) {
  return (error: unknown, _req: Request, res: Response, _next: NextFunction): void => {
    sendError(res, error, () => (res.locals.boo ? contextOf(res).logger : logger));
  };
}
