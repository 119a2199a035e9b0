import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { isIP, type BlockList, type Socket } from 'node:net';

const hopByHop = ['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade'];

/**
 * Not forwarded towards the upstream: hop-by-hop headers; those the gateway sets itself
 * whatever the client sent (the body is rewritten as plain JSON, hence no `content-encoding`);
 * the client's credentials (`authorization`, `x-api-key`, `cookie`); and claims about the client's address
 * that only the gateway may make (`x-forwarded-*`, `forwarded`, `x-real-ip`). One set per
 * direction: a lookup per header, not one per list.
 */
const droppedUpstream = new Set([
  ...hopByHop,
  'host',
  'content-length',
  'content-encoding',
  'authorization',
  'x-api-key',
  'cookie',
  'expect',
  'accept-encoding',
  'x-request-id',
  'forwarded',
  'x-real-ip',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-forwarded-port',
  'x-forwarded-prefix',
  'x-forwarded-server',
]);

/**
 * Not forwarded towards the client: hop-by-hop headers, those the gateway sets itself, and, as
 * nginx does by default, the upstream's `Date` and `Server`: the client's peer is the gateway,
 * which dates its own answers (Node's cached clock, where a relayed header costs a validation)
 * and does not advertise what its upstreams run.
 */
const droppedDownstream = new Set([...hopByHop, 'x-request-id', 'x-boo-candidate', 'x-boo-attempts', 'date', 'server']);

/**
 * Extra header names `Connection` lists; undefined when it lists none beyond the hop-by-hop
 * ones (`keep-alive`, `close`: nearly every request), so the common case allocates nothing.
 */
function listedInConnection(headers: IncomingHttpHeaders): Set<string> | undefined {
  const connection = headers.connection;
  if (typeof connection !== 'string') return undefined;
  const lower = connection.toLowerCase();
  if (lower === 'keep-alive' || lower === 'close') return undefined;
  const listed = new Set<string>();
  for (const token of lower.split(',')) {
    const name = token.trim();
    if (name) listed.add(name);
  }
  return listed;
}

function copyEndToEnd(headers: IncomingHttpHeaders, dropped: ReadonlySet<string>): OutgoingHttpHeaders {
  const listed = listedInConnection(headers);
  const out: OutgoingHttpHeaders = {};
  // for..in rather than Object.entries: no array of pairs per request (header objects carry no inherited enumerables).
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || dropped.has(name) || listed?.has(name) || name.startsWith('proxy-') || name.startsWith('x-forwarded-')) continue;
    out[name] = value;
  }
  return out;
}

/** Who the client is, as the upstream is told in `X-Forwarded-For` and `X-Forwarded-Proto`. */
export interface ForwardedClient {
  readonly forwardedFor: string;
  readonly forwardedProto: string;
}

/**
 * The client's headers as the upstream gets them: hop-by-hop headers (and those `Connection`
 * lists) dropped, the client's credentials and forwarding claims never forwarded, `X-Boo-Source`
 * kept unchanged, `X-Forwarded-For`/`-Proto` set by the gateway. The provider key is added per attempt.
 */
export function upstreamRequestHeaders(
  clientHeaders: IncomingHttpHeaders,
  requestId: string,
  client: ForwardedClient,
  contentType: string,
): OutgoingHttpHeaders {
  const headers = copyEndToEnd(clientHeaders, droppedUpstream);
  headers['x-request-id'] = requestId;
  headers['x-forwarded-for'] = client.forwardedFor;
  headers['x-forwarded-proto'] = client.forwardedProto;
  // Identity so the relayed bytes can be read for usage and stay what the client negotiated.
  headers['accept-encoding'] = 'identity';
  headers['content-type'] = contentType;
  return headers;
}

/** What each connection's peer is told as, when no proxy is trusted: worked out once per connection. */
const untrustedPeers = new WeakMap<Socket, ForwardedClient>();

function addressOf(socket: Socket): string {
  const peer = socket.remoteAddress;
  if (peer === undefined) return 'unknown';
  return peer.startsWith('::ffff:') && isIP(peer.slice(7)) === 4 ? peer.slice(7) : peer;
}

/**
 * What the upstream is told of the client on `socket`. A trusted proxy's own `X-Forwarded-For`
 * is extended with its address, as nginx's `$proxy_add_x_forwarded_for` does, and its
 * `X-Forwarded-Proto` kept; anyone else's are replaced, so a client cannot pose as another.
 */
export function forwardedClient(clientHeaders: IncomingHttpHeaders, socket: Socket, trustedProxies: BlockList | undefined): ForwardedClient {
  if (trustedProxies === undefined) {
    let told = untrustedPeers.get(socket);
    if (told === undefined) {
      told = { forwardedFor: addressOf(socket), forwardedProto: 'http' };
      untrustedPeers.set(socket, told);
    }
    return told;
  }
  const address = addressOf(socket);
  if (!trustedProxies.check(address, isIP(address) === 6 ? 'ipv6' : 'ipv4')) return { forwardedFor: address, forwardedProto: 'http' };
  const chain = clientHeaders['x-forwarded-for'];
  const proto = clientHeaders['x-forwarded-proto'];
  return {
    forwardedFor: typeof chain === 'string' && chain !== '' ? `${chain}, ${address}` : address,
    forwardedProto: proto === 'https' || proto === 'http' ? proto : 'http',
  };
}

/** The upstream answer's headers as the client gets them: hop-by-hop headers, `Date` and `Server` dropped. */
export function downstreamResponseHeaders(upstreamHeaders: IncomingHttpHeaders): OutgoingHttpHeaders {
  return copyEndToEnd(upstreamHeaders, droppedDownstream);
}
