import { timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { NextFunction, Request, Response } from 'express';
import { digestApiKey } from '../../config/load.js';
import { AuthenticationError, PermissionDeniedError } from '../../errors.js';

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

function bearerKey(header: string | undefined): string | undefined {
  return typeof header === 'string' ? bearer.exec(header)?.[1] : undefined;
}

/** True when auth is off (no digests) or the `Authorization` header carries an accepted bearer key. */
export function isAuthorized(header: string | undefined, acceptedDigests: readonly Buffer[]): boolean {
  if (acceptedDigests.length === 0) return true;
  const key = bearerKey(header);
  return key !== undefined && isAcceptedKey(key, acceptedDigests);
}

/**
 * {@link isAuthorized} for the Anthropic Messages API, whose clients send their key as
 * `x-api-key` (`@anthropic-ai/sdk` does); a bearer key is accepted there too.
 */
export function isAuthorizedAnthropic(headers: IncomingHttpHeaders, acceptedDigests: readonly Buffer[]): boolean {
  if (acceptedDigests.length === 0) return true;
  const key = headers['x-api-key'];
  if (typeof key === 'string' && key !== '') return isAcceptedKey(key, acceptedDigests);
  return isAuthorized(headers.authorization, acceptedDigests);
}

/**
 * `/admin/*` needs an admin key (`auth.adminKeys`) whenever any key is configured: without a
 * valid key 401, with a client key 403. With no keys at all auth is off, as everywhere.
 */
export function requireAdminKey(keys: () => { apiKeyDigests: readonly Buffer[]; adminKeyDigests: readonly Buffer[] }) {
  return (req: Request, _res: Response, next: NextFunction): void => {
    const { apiKeyDigests, adminKeyDigests } = keys();
    if (apiKeyDigests.length === 0) return next();
    const key = bearerKey(req.headers.authorization);
    if (key === undefined || !isAcceptedKey(key, apiKeyDigests)) return next(new AuthenticationError());
    if (adminKeyDigests.length > 0 && isAcceptedKey(key, adminKeyDigests)) return next();
    next(new PermissionDeniedError('this key may not read /admin; an admin key (auth.adminKeys) is needed'));
  };
}

/** Bearer-key check against `auth.apiKeys`; lets everything through when none are configured. */
export function requireApiKey(acceptedDigests: () => readonly Buffer[]) {
  return (req: Request, _res: Response, next: NextFunction): void => {
    next(isAuthorized(req.headers.authorization, acceptedDigests()) ? undefined : new AuthenticationError());
  };
}
