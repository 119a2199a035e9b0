import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

const hopByHop = [
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
];

/**
 * Not forwarded towards the upstream: hop-by-hop headers, and those the gateway sets itself
 * whatever the client sent. One set per direction: a lookup per header, not one per list.
 */
const droppedUpstream = new Set([...hopByHop, 'host', 'content-length', 'authorization', 'expect', 'accept-encoding', 'x-request-id']);

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
    if (value === undefined || dropped.has(name) || listed?.has(name) || name.startsWith('proxy-')) continue;
    out[name] = value;
  }
  return out;
}

/**
 * The client's headers as the upstream gets them: hop-by-hop headers (and those `Connection`
 * lists) dropped, the client's `Authorization` never forwarded, `X-Boo-Source` kept unchanged.
 * The provider key and request id are added per attempt.
 */
export function upstreamRequestHeaders(clientHeaders: IncomingHttpHeaders, requestId: string): OutgoingHttpHeaders {
  const headers = copyEndToEnd(clientHeaders, droppedUpstream);
  headers['x-request-id'] = requestId;
  // Identity so the relayed bytes can be read for usage and stay what the client negotiated.
  headers['accept-encoding'] = 'identity';
  headers['content-type'] = 'application/json';
  return headers;
}

/** The upstream answer's headers as the client gets them: hop-by-hop headers, `Date` and `Server` dropped. */
export function downstreamResponseHeaders(upstreamHeaders: IncomingHttpHeaders): OutgoingHttpHeaders {
  return copyEndToEnd(upstreamHeaders, droppedDownstream);
}
