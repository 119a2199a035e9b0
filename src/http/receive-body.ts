import type { IncomingMessage, ServerResponse } from 'node:http';
import { BodyTooLargeError, InvalidRequestError, type GatewayError } from '../errors.js';

/**
 * Reads a raw request body, up to `limit` bytes, and calls either `onBody` or `onError` once.
 * Unlike body-parser, which drains a too-large body to its end before answering, this refuses at once (from Content-Length, or as soon as the count passes the
 * limit) and closes the connection after the answer, so a client cannot make the gateway read
 * gigabytes.
 */
export function receiveBody(
  req: IncomingMessage,
  res: ServerResponse,
  limit: number,
  onBody: (body: Buffer) => void,
  onError: (error: GatewayError) => void,
): void {
  const declared = Number(req.headers['content-length']);
  const refuse = (error: GatewayError) => {
    req.removeAllListeners('data');
    req.pause();
    res.setHeader('connection', 'close');
    res.once('finish', () => req.socket.destroySoon());
    onError(error);
  };
  if (declared > limit) return refuse(new BodyTooLargeError(limit));
  // A body in one chunk (nearly all) is kept as it came. A longer one with a declared length is
  // copied into one buffer as it arrives, so that no copy of megabytes holds up the event loop at
  // its end; without a length, its chunks are joined at the end.
  let first: Buffer | undefined;
  let whole: Buffer | undefined;
  let more: Buffer[] | undefined;
  let size = 0;
  let settled = false;
  req.on('data', (chunk: Buffer) => {
    const offset = size;
    size += chunk.length;
    if (size > limit) {
      settled = true;
      refuse(new BodyTooLargeError(limit));
    } else if (first === undefined) {
      first = chunk;
    } else if (whole !== undefined || (Number.isSafeInteger(declared) && declared >= size)) {
      if (whole === undefined) {
        whole = Buffer.allocUnsafe(declared);
        first.copy(whole, 0);
      }
      chunk.copy(whole, offset);
    } else {
      (more ??= [first]).push(chunk);
    }
    // A long body is read a chunk per event-loop turn: a fast sender would otherwise have its
    // socket drained in bursts of megabytes per turn, and four 10 MB uploads at once held
    // /healthz for 35-55 ms.
    if (first !== chunk) {
      req.pause();
      setImmediate(resumeReading);
    }
  });
  const resumeReading = () => {
    if (!settled) req.resume();
  };
  req.once('end', () => {
    if (settled) return;
    settled = true;
    if (whole !== undefined) onBody(size === whole.length ? whole : whole.subarray(0, size));
    else onBody(more ? Buffer.concat(more, size) : (first ?? Buffer.alloc(0)));
  });
  req.once('error', (err) => {
    if (settled) return;
    settled = true;
    onError(new InvalidRequestError(`request body was not received in full (${err.message})`, null, 'request_aborted'));
  });
}
