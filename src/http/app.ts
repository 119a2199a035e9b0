import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Registry } from 'prom-client';
import type { Config } from '../config/load.js';
import type { BreakerRegistry } from '../breakers/breaker-registry.js';
import type { Failover } from '../dispatch/failover.js';
import type { UpstreamPassthrough } from '../dispatch/upstream-passthrough.js';
import { downstreamResponseHeaders } from '../upstream/forward-headers.js';
import { AuthenticationError, InvalidRequestError, RouteNotFoundError, UnsupportedContentEncodingError, type GatewayError } from '../errors.js';
import { multipartBoundary } from '../dispatch/multipart-body.js';
import { endpointAt, type ErrorShape } from '../protocols/endpoints.js';
import type { BackingServicesHealth } from '../events/event-sink.js';
import type { FleetState } from '../fleet/fleet-state.js';
import type { GatewayMetrics } from '../metrics/registry.js';
import { sanitizeClientText, type Logger } from '../shared/logger.js';
import { errorMiddleware, sendError } from './error-middleware.js';
import { authorizedAnthropicKey, authorizedKey, requireAdminKey, requireApiKey } from './middleware/auth.js';
import { receiveBody } from './receive-body.js';
import { contextOf, openRequestContext, requestContext, type RequestContext } from './middleware/request-context.js';
import { serveDispatch } from './serve-dispatch.js';
import { modelsRoute } from './routes/models.js';
import { adminCandidatesRoute, healthzRoute, metricsRoute, readyzRoute } from './routes/operations.js';

export interface AppDeps {
  readonly config: () => Config;
  readonly fleet: FleetState;
  readonly breakers: BreakerRegistry;
  readonly failover: Failover;
  readonly passthrough: UpstreamPassthrough;
  readonly register: Registry;
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  /** Redis and the database as /readyz reports them (and `boo_redis_up` at each scrape). */
  readonly backingServices: () => BackingServicesHealth;
  /** True once a shutdown began: /readyz answers 503. */
  readonly draining: () => boolean;
}

/** The spelling of a path Express would route alike: case-insensitive, one trailing slash optional. */
function canonicalPath(path: string): string {
  const lower = path.toLowerCase();
  return lower.length > 1 && lower.endsWith('/') ? lower.slice(0, -1) : lower;
}

/**
 * The gateway's request handler. It never listens and never reads the environment.
 *
 * Dispatch requests (`POST` to a path of `endpoints`) are served on plain node:http:
 * request context, auth, bounded body read, parse, dispatch, the same error answers. Express's
 * router, request/response decoration and middleware chain cost several times what a whole
 * forward costs, and the hot path needs none of it. Every other request goes to Express.
 */
export function createApp(deps: AppDeps): RequestListener {
  const { config, failover, metrics, logger } = deps;
  const app = createExpressApp(deps);
  const rootLogger = () => logger;
  return (req: IncomingMessage, res: ServerResponse) => {
    // node:http's own check answers a bare 400; this one answers in the OpenAI shape.
    if (req.headers.host === undefined && req.httpVersionMajor === 1 && req.httpVersionMinor === 1) {
      res.setHeader('connection', 'close');
      return sendError(res, new InvalidRequestError('an HTTP/1.1 request needs a Host header', null, 'missing_host'), rootLogger);
    }
    if (req.method !== 'POST') return app(req, res);
    const url = req.url ?? '';
    const queryAt = url.indexOf('?');
    const path = queryAt < 0 ? url : url.slice(0, queryAt);
    const endpoint = endpointAt(path) ?? endpointAt(canonicalPath(path));
    if (endpoint === undefined) return app(req, res);

    const context = openRequestContext(req, res, logger, metrics);
    context.route = endpoint.route;
    const current = config();
    const refuse = (error: GatewayError) => sendDispatchError(res, context, error, rootLogger, endpoint.errors);
    // An unread body is left to node:http, as it is on the Express path.
    const keyIndex =
      endpoint.errors === 'anthropic'
        ? authorizedAnthropicKey(req.headers, current.apiKeyDigests)
        : authorizedKey(req.headers.authorization, current.apiKeyDigests);
    if (keyIndex === undefined) return refuse(new AuthenticationError());
    // Admin keys follow the client keys in the digests: they have no name and no limits.
    const keyName = current.clientKeys[keyIndex]?.name;
    // The body is read and rewritten: an encoding it was sent in cannot be honoured.
    const encoding = req.headers['content-encoding'];
    if (encoding !== undefined && encoding.trim().toLowerCase() !== 'identity')
      return refuse(new UnsupportedContentEncodingError(sanitizeClientText(encoding, 40)));
    const boundary = endpoint.body === 'multipart' ? multipartBoundary(req.headers['content-type']) : undefined;
    if (endpoint.body === 'multipart' && boundary === undefined) {
      return refuse(new InvalidRequestError(`${endpoint.path} takes multipart/form-data with a boundary`, null, 'invalid_multipart'));
    }
    receiveBody(
      req,
      res,
      current.limits.maxBodyBytes,
      (body) =>
        serveDispatch(failover, endpoint, boundary, req, res, context, body, current, keyName).catch((err: unknown) =>
          sendDispatchError(res, context, err, () => context.logger, endpoint.errors),
        ),
      (error) => sendDispatchError(res, context, error, () => context.logger, endpoint.errors),
    );
  };
}

/** {@link sendError} on the fast path: a relayed answer carries the request id in its head, an error answer gets it here. */
function sendDispatchError(res: ServerResponse, context: RequestContext, error: unknown, logger: () => Logger, shape: ErrorShape): void {
  if (!res.headersSent) res.setHeader('x-request-id', context.requestId);
  sendError(res, error, logger, shape);
}

function createExpressApp(deps: AppDeps): express.Express {
  const { config, fleet, breakers, passthrough, register, metrics, logger } = deps;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', false);

  app.use(requestContext(logger, metrics));
  app.get('/healthz', healthzRoute());
  app.get('/readyz', readyzRoute(deps.backingServices, deps.draining));
  app.get(
    '/metrics',
    metricsRoute(register, () => metrics.redisUp.set(deps.backingServices().redis === 'ok' ? 1 : 0)),
  );

  const auth = requireApiKey(() => config().apiKeyDigests);
  app.get('/v1/models', auth, modelsRoute(config, fleet, Date.now()));
  app.get('/admin/candidates', requireAdminKey(config), adminCandidatesRoute(config, fleet, breakers));
  app.get('/upstream/:model/*rest', auth, async (req: Request, res: Response) => {
    const context = contextOf(res);
    context.route = 'upstream';
    const { model, rest } = req.params as { model: string; rest: string[] };
    const queryAt = req.url.indexOf('?');
    const query = queryAt < 0 ? '' : new URLSearchParams(req.url.slice(queryAt + 1)).toString();
    const answer = await passthrough.fetch(model, rest, query, context.clientSignal);
    const headers = downstreamResponseHeaders(answer.headers);
    delete headers['content-length'];
    headers['x-boo-candidate'] = answer.candidate;
    headers['x-boo-cache'] = answer.cached ? 'hit' : 'miss';
    res.writeHead(answer.status, headers).end(answer.body);
  });

  app.use((req: Request, _res: Response, next: NextFunction) => next(new RouteNotFoundError(req.method, req.path)));
  app.use(errorMiddleware(logger));
  return app;
}
