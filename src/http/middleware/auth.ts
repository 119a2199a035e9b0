import { timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { digestApiKey } from '../../config/load.js';
import { AuthenticationError } from '../../errors.js';

/**
 * Digests of keys that were accepted, by key: a client sends the same key on every request, and
 * the sha256 was the largest item of auth's cost. Only accepted keys enter (a flood of wrong keys
 * cannot fill it), the comparison below still runs on every request (a reload that revokes a key
 * takes effect at once), and the bound keeps it small whatever clients send.
 */
const acceptedKeyDigests = new Map<string, Buffer>();
const acceptedKeyDigestsMax = 1024;

/**
 * True when the presented key's sha256 equals one of the accepted digests. Every digest is
 * compared, in constant time each, so the timing says nothing about which or how much matched.
 */
export function isAcceptedKey(key: string, acceptedDigests: readonly Buffer[]): boolean {
  const cached = acceptedKeyDigests.get(key);
  const presented = cached ?? digestApiKey(key);
  let accepted = false;
  for (const digest of acceptedDigests) accepted = timingSafeEqual(presented, digest) || accepted;
  if (accepted && cached === undefined) {
    if (acceptedKeyDigests.size >= acceptedKeyDigestsMax) acceptedKeyDigests.clear();
    acceptedKeyDigests.set(key, presented);
  }
  return accepted;
}

const bearer = /^Bearer\s+(\S+)\s*$/i;

/** True when auth is off (no digests) or the `Authorization` header carries an accepted bearer key. */
export function isAuthorized(header: string | undefined, acceptedDigests: readonly Buffer[]): boolean {
  if (acceptedDigests.length === 0) return true;
  const match = typeof header === 'string' ? bearer.exec(header) : null;
  return match?.[1] !== undefined && isAcceptedKey(match[1], acceptedDigests);
}

/** Bearer-key check against `auth.apiKeys`; lets everything through when none are configured. */
export function requireApiKey(acceptedDigests: () => readonly Buffer[]) {
  return (req: Request, _res: Response, next: NextFunction): void => {
    next(isAuthorized(req.headers.authorization, acceptedDigests()) ? undefined : new AuthenticationError());
  };
}
