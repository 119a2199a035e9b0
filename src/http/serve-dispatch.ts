import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { DispatchRequest, Failover } from '../dispatch/failover.js';
import { scanMultipart } from '../dispatch/multipart-body.js';
import { RequestBody } from '../dispatch/request-body.js';
import type { Endpoint } from '../protocols/endpoints.js';
import { scanRequest, scanRequestInSlices, syncScanBytes, type RequestFields } from '../dispatch/request-scanner.js';
import type { Config } from '../config/load.js';
import { forwardedClient, type ForwardedClient } from '../upstream/forward-headers.js';
import type { BlockList } from 'node:net';
import { sanitizeClientText, type Logger } from '../shared/logger.js';
import type { RequestContext } from './middleware/request-context.js';

/**
 * A client's dispatch request as the dispatcher reads it. A class, not an object literal with a
 * `logger` getter: V8 defines a literal's accessor at run time, which turned every request's
 * object into a slow dictionary (about 4,000 instructions a request, by callgrind, and every
 * later read of it a hash lookup). The child logger is still made only when something logs.
 */
class ClientDispatchRequest implements DispatchRequest {
  readonly headers: IncomingHttpHeaders;
  readonly source: string | null;
  readonly forwarded: ForwardedClient;

  constructor(
    readonly endpoint: Endpoint,
    readonly model: string,
    readonly stream: boolean,
    readonly body: RequestBody,
    readonly requiredContext: number,
    readonly contentType: string,
    req: IncomingMessage,
    readonly client: RequestContext,
    trustedProxies: BlockList | undefined,
    readonly keyName: string | undefined,
  ) {
    this.headers = req.headers;
    this.forwarded = forwardedClient(req.headers, req.socket, trustedProxies);
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

/**
 * Reads one dispatch request's raw body and serves it with failover. Rejects only before anything
 * was written. A JSON body too large to read in one go is read between other work (see
 * `scanRequestInSlices`), so no body holds up the event loop for long; a form is found by its
 * delimiters (`scanMultipart`), its files never decoded.
 */
export async function serveDispatch(
  failover: Failover,
  endpoint: Endpoint,
  boundary: string | undefined,
  req: IncomingMessage,
  res: ServerResponse,
  context: RequestContext,
  raw: Buffer,
  config: Config,
  keyName: string | undefined,
): Promise<void> {
  let request: ClientDispatchRequest;
  if (boundary !== undefined) {
    const form = scanMultipart(raw, boundary);
    const body = new RequestBody(raw, form.model, form.modelSpan, 'form');
    request = new ClientDispatchRequest(endpoint, form.model, false, body, 0, req.headers['content-type']!, req, context, config.trustedProxies, keyName);
  } else {
    const { limits } = config;
    const fields: RequestFields = raw.length <= syncScanBytes ? scanRequest(raw, limits) : await scanRequestInSlices(raw, limits);
    const body = new RequestBody(raw, fields.model, fields.modelSpan);
    request = new ClientDispatchRequest(
      endpoint,
      fields.model,
      fields.stream,
      body,
      fields.requiredContext,
      'application/json',
      req,
      context,
      config.trustedProxies,
      keyName,
    );
  }
  await failover.serve(request, res);
}
