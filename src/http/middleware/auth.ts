import { timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { digestApiKey } from '../../config/load.js';
import { AuthenticationError } from '../../errors.js';

/**
 * True when the presented key's sha256 equals one of the accepted digests. Every digest is
 * compared, in constant time each, so the timing says nothing about which or how much matched.
 */
export function isAcceptedKey(key: string, acceptedDigests: readonly Buffer[]): boolean {
  const presented = digestApiKey(key);
  let accepted = false;
  for (const digest of acceptedDigests) accepted = timingSafeEqual(presented, digest) || accepted;
  return accepted;
}

/** Bearer-key check against `auth.apiKeys`; lets everything through when none are configured. */
export function requireApiKey(acceptedDigests: () => readonly Buffer[]) {
  return (req: Request, _res: Response, next: NextFunction): void => {
    const digests = acceptedDigests();
    if (digests.length === 0) return next();
    const header = req.headers.authorization;
    const match = typeof header === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    if (!match?.[1] || !isAcceptedKey(match[1], digests)) return next(new AuthenticationError());
    next();
  };
}
