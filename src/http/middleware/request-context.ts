import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { NextFunction, Request, Response } from 'express';
import type { GatewayMetrics, HttpRoute } from '../../metrics/registry.js';
import type { Logger } from '../../shared/logger.js';

const acceptableRequestId = /^[\w.:-]{1,128}$/;

/**
 * What every handler of a request shares: kept on `res.locals` for Express routes, passed
 * directly on the dispatch fast path. The per-request child logger is made on first use only:
 * a request that logs nothing (the common case at `info`) never pays for it.
 */
export class RequestContext {
  readonly requestId: string;
  /** performance.now() at arrival. */
  readonly receivedAt: number;
  route: HttpRoute = 'other';
  /** Aborted when the client goes away before the response finished. */
  readonly clientSignal: AbortSignal;
  private readonly parentLogger: Logger;
  private childLogger: Logger | undefined;

  constructor(requestId: string, parentLogger: Logger, clientSignal: AbortSignal) {
    this.requestId = requestId;
    this.receivedAt = performance.now();
    this.parentLogger = parentLogger;
    this.clientSignal = clientSignal;
  }

  get logger(): Logger {
    this.childLogger ??= this.parentLogger.child({ requestId: this.requestId });
    return this.childLogger;
  }
}

export function contextOf(res: Response): RequestContext {
  return res.locals.boo as RequestContext;
}

/**
 * Starts the context of one request: accepts the client's `X-Request-Id` when it is a plain
 * token (else makes one), echoes it, watches for the client going away, and counts the request
 * by route and status when it ends.
 */
export function openRequestContext(req: IncomingMessage, res: ServerResponse, logger: Logger, metrics: GatewayMetrics): RequestContext {
  const offered = req.headers['x-request-id'];
  const requestId = typeof offered === 'string' && acceptableRequestId.test(offered) ? offered : randomUUID();
  const controller = new AbortController();
  const context = new RequestContext(requestId, logger, controller.signal);
  res.setHeader('x-request-id', requestId);
  res.once('close', () => {
    if (!res.writableFinished) controller.abort();
    metrics.httpRequestsOf(context.route, res.statusCode).inc();
  });
  return context;
}

/** {@link openRequestContext} as Express middleware, for the routes off the dispatch fast path. */
export function requestContext(logger: Logger, metrics: GatewayMetrics) {
  return (req: Request, res: Response, next: NextFunction): void => {
    res.locals.boo = openRequestContext(req, res, logger, metrics);
    next();
  };
}
