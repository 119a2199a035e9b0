import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import type { GatewayMetrics, HttpRoute } from '../../metrics/registry.js';
import type { Logger } from '../../shared/logger.js';

const acceptableRequestId = /^[\w.:-]{1,128}$/;

/** What every handler of a request shares: kept on `res.locals`. */
export interface RequestContext {
  readonly requestId: string;
  /** performance.now() at arrival. */
  readonly receivedAt: number;
  readonly logger: Logger;
  route: HttpRoute;
  /** Aborted when the client goes away before the response finished. */
  readonly clientSignal: AbortSignal;
}

export function contextOf(res: Response): RequestContext {
  return res.locals.boo as RequestContext;
}

/**
 * Accepts the client's `X-Request-Id` when it is a plain token (else makes one), echoes it,
 * watches for the client going away, and counts the request by route and status when it ends.
 */
export function requestContext(logger: Logger, metrics: GatewayMetrics) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const offered = req.headers['x-request-id'];
    const requestId = typeof offered === 'string' && acceptableRequestId.test(offered) ? offered : randomUUID();
    const controller = new AbortController();
    const context: RequestContext = {
      requestId,
      receivedAt: performance.now(),
      logger: logger.child({ requestId }),
      route: 'other',
      clientSignal: controller.signal,
    };
    res.locals.boo = context;
    res.setHeader('x-request-id', requestId);
    res.once('close', () => {
      if (!res.writableFinished) controller.abort();
      metrics.httpRequests.labels(context.route, String(res.statusCode)).inc();
    });
    next();
  };
}
