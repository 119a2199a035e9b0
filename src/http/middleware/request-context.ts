import type { IncomingMessage, ServerResponse } from 'node:http';
import type { NextFunction, Request, Response } from 'express';
import type { ClientConnection } from '../../upstream/send-attempt.js';
import type { GatewayMetrics, HttpRoute } from '../../metrics/registry.js';
import type { Logger } from '../../shared/logger.js';
import { timeOrderedUuid } from '../../shared/time-ordered-uuid.js';

const acceptableRequestId = /^[\w.:-]{1,128}$/;

/**
 * What every handler of a request shares: kept on `res.locals` for Express routes, passed
 * directly on the dispatch fast path. What only some requests need is made on first use: the
 * per-request child logger (a request that logs nothing, the common case at `info`, never pays
 * for it) and the AbortSignal (the dispatcher listens through {@link ClientConnection} instead).
 */
export class RequestContext implements ClientConnection {
  readonly requestId: string;
  /** performance.now() at arrival. */
  readonly receivedAt: number;
  route: HttpRoute = 'other';
  private readonly parentLogger: Logger;
  private childLogger: Logger | undefined;
  private goneListeners: Array<() => void> | undefined;
  private controller: AbortController | undefined;
  private closedEarly = false;

  constructor(requestId: string, parentLogger: Logger) {
    this.requestId = requestId;
    this.receivedAt = performance.now();
    this.parentLogger = parentLogger;
  }

  get logger(): Logger {
    this.childLogger ??= this.parentLogger.child({ requestId: this.requestId });
    return this.childLogger;
  }

  /** True once the client went away before the response finished. */
  get gone(): boolean {
    return this.closedEarly;
  }

  onGone(listener: () => void): () => void {
    const listeners = (this.goneListeners ??= []);
    listeners.push(listener);
    return () => {
      const at = listeners.indexOf(listener);
      if (at >= 0) listeners.splice(at, 1);
    };
  }

  /** Aborted when the client goes away before the response finished. */
  get clientSignal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.closedEarly) this.controller.abort();
    }
    return this.controller.signal;
  }

  /** Called once when the response closed before it finished. */
  clientWentAway(): void {
    if (this.closedEarly) return;
    this.closedEarly = true;
    this.controller?.abort();
    for (const listener of this.goneListeners?.splice(0) ?? []) listener();
  }
}

export function contextOf(res: Response): RequestContext {
  return res.locals.boo as RequestContext;
}

/**
 * Starts the context of one request: accepts the client's `X-Request-Id` when it is a plain
 * token (else makes one), watches for the client going away, and counts the request by route
 * and status when it ends. The caller echoes the id: a header set here before `writeHead`
 * sends node:http down its slower merge path, one `setHeader` per header of the answer.
 */
export function openRequestContext(req: IncomingMessage, res: ServerResponse, logger: Logger, metrics: GatewayMetrics): RequestContext {
  const offered = req.headers['x-request-id'];
  const requestId = typeof offered === 'string' && acceptableRequestId.test(offered) ? offered : timeOrderedUuid();
  const context = new RequestContext(requestId, logger);
  res.once('close', () => {
    if (!res.writableFinished) context.clientWentAway();
    metrics.httpRequestsOf(context.route, res.statusCode).inc();
  });
  return context;
}

/** {@link openRequestContext} as Express middleware, for the routes off the dispatch fast path. */
export function requestContext(logger: Logger, metrics: GatewayMetrics) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const context = openRequestContext(req, res, logger, metrics);
    res.setHeader('x-request-id', context.requestId);
    res.locals.boo = context;
    next();
  };
}
