import type { NextFunction, Request, Response } from 'express';
import { BodyTooLargeError, InvalidRequestError } from '../../errors.js';

/**
 * Reads the raw request body into `req.body` (a Buffer), up to `maxBytes`. Unlike body-parser,
 * which drains a too-large body to its end before answering, this answers 413 at once (from
 * Content-Length, or as soon as the count passes the limit) and closes the connection, so a
 * client cannot make the gateway read gigabytes.
 */
export function readBody(maxBytes: () => number) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const limit = maxBytes();
    const declared = Number(req.headers['content-length']);
    const refuse = (error: Error) => {
      req.removeAllListeners('data');
      req.pause();
      res.setHeader('connection', 'close');
      res.once('finish', () => req.socket.destroySoon());
      next(error);
    };
    if (declared > limit) return refuse(new BodyTooLargeError(limit));
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        settled = true;
        refuse(new BodyTooLargeError(limit));
      } else {
        chunks.push(chunk);
      }
    });
    req.once('end', () => {
      if (settled) return;
      settled = true;
      req.body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size);
      next();
    });
    req.once('error', (err) => {
      if (settled) return;
      settled = true;
      next(new InvalidRequestError(`request body was not received in full (${err.message})`, null, 'request_aborted'));
    });
  };
}
