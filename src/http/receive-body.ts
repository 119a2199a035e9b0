import type { IncomingMessage, ServerResponse } from 'node:http';
import { BodyTooLargeError, InvalidRequestError, type GatewayError } from '../errors.js';

/**
 * Reads a raw request body, up to `limit` bytes, and calls either `onBody` or `onError` once. Unlike body-parser, which drains a too-large body to its end before
 * answering, this refuses at once (from Content-Length, or as soon as the count passes the
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
  let first: Buffer | undefined;
  let more: Buffer[] | undefined;
  let size = 0;
  let settled = false;
  req.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size > limit) {
      settled = true;
      refuse(new BodyTooLargeError(limit));
    } else if (first === undefined) {
      first = chunk;
    } else {
      (more ??= [first]).push(chunk);
    }
  });
  req.once('end', () => {
    if (settled) return;
    settled = true;
    onBody(more ? Buffer.concat(more, size) : (first ?? Buffer.alloc(0)));
  });
  req.once('error', (err) => {
    if (settled) return;
    settled = true;
    onError(new InvalidRequestError(`request body was not received in full (${err.message})`, null, 'request_aborted'));
  });
}
