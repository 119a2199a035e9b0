import type { NextFunction, Request, Response } from 'express';
import { ZodError } from 'zod';
import { BodyTooLargeError, GatewayError, InvalidRequestError, toOpenAIError } from '../errors.js';
import type { Logger } from '../shared/logger.js';
import { contextOf } from './middleware/request-context.js';

/** Errors of Express and body-parser carry an HTTP `status` (and body-parser's a `type`). */
function fromFrameworkError(error: unknown, maxBodyBytes: number): GatewayError | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const { type, status } = error as { type?: unknown; status?: unknown };
  if (type === 'entity.too.large') return new BodyTooLargeError(maxBodyBytes);
  if (type === 'request.aborted') return new InvalidRequestError('request body was not received in full', null, 'request_aborted');
  if (typeof type === 'string' && (type.startsWith('entity.') || type.startsWith('encoding.') || type.startsWith('charset.'))) {
    return new InvalidRequestError(`unreadable request body (${type})`, null, 'invalid_body');
  }
  if (typeof status === 'number' && status >= 400 && status < 500) {
    // e.g. a malformed percent-encoding in the path; the framework's message names no secret.
    const message = error instanceof Error ? error.message : 'bad request';
    return new GatewayError(message, { code: 'invalid_request', status, openaiType: 'invalid_request_error' });
  }
  return undefined;
}

/**
 * The one place where errors become HTTP: GatewayError -> its status and OpenAI error body;
 * ZodError -> 400; anything else -> 500 with a generic message and the full error logged.
 */
export function errorMiddleware(logger: Logger, maxBodyBytes: () => number) {
  return (error: unknown, _req: Request, res: Response, _next: NextFunction): void => {
    let gatewayError: GatewayError;
    if (error instanceof GatewayError) {
      gatewayError = error;
    } else if (error instanceof ZodError) {
      const issue = error.issues[0];
      gatewayError = new InvalidRequestError(
        issue ? `${issue.path.join('.') || 'body'}: ${issue.message}` : 'invalid request',
        issue?.path.join('.') || null,
      );
    } else {
      gatewayError =
        fromFrameworkError(error, maxBodyBytes()) ??
        new GatewayError('internal error', { code: 'internal_error', status: 500, openaiType: 'api_error' });
      if (gatewayError.status === 500) (res.locals.boo ? contextOf(res).logger : logger).error({ err: error }, 'unhandled error');
    }
    if (res.headersSent) {
      // Nothing sensible can follow bytes already sent: end the exchange.
      res.destroy();
      return;
    }
    res.status(gatewayError.status).json(toOpenAIError(gatewayError));
  };
}
