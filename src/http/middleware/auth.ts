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
 * Where the presented key's sha256 stands in the accepted digests, or -1 when it is none of them.
 * Every digest is compared, in constant time each, so the timing says nothing about which or how
 * much matched.
 */
export function acceptedKeyIndex(key: string, acceptedDigests: readonly Buffer[]): number {
  const cached = acceptedKeyDigests.get(key);
  const presented = cached ?? digestApiKey(key);
  let index = -1;
  for (let i = 0; i < acceptedDigests.length; i++) {
    if (timingSafeEqual(presented, acceptedDigests[i]!) && index < 0) index = i;
  }
  if (index >= 0 && cached === undefined) {
    if (acceptedKeyDigests.size >= acceptedKeyDigestsMax) acceptedKeyDigests.clear();
    acceptedKeyDigests.set(key, presented);
  }
  return index;
}

export function isAcceptedKey(key: string, acceptedDigests: readonly Buffer[]): boolean {
  return acceptedKeyIndex(key, acceptedDigests) >= 0;
}

const bearer = /^Bearer\s+(\S+)\s*$/i;

function bearerKey(header: string | undefined): string | undefined {
  return typeof header === 'string' ? bearer.exec(header)?.[1] : undefined;
}

/** What {@link authorizedKey} answers when auth is off (no digests): accepted, without a key. */
export const authOff = -1;

/**
 * The index in `acceptedDigests` of the bearer key the `Authorization` header carries;
 * {@link authOff} when no digests are configured; undefined when the key is missing or not accepted.
 * The index names the client's key (`config.clientKeys`), whose name and limits capacity needs.
 */
export function authorizedKey(header: string | undefined, acceptedDigests: readonly Buffer[]): number | undefined {
  if (acceptedDigests.length === 0) return authOff;
  const key = bearerKey(header);
  if (key === undefined) return undefined;
  const index = acceptedKeyIndex(key, acceptedDigests);
  return index >= 0 ? index : undefined;
}

/**
 * {@link authorizedKey} for the Anthropic Messages API, whose clients send their key as
 * `x-api-key` (`@anthropic-ai/sdk` does); a bearer key is accepted there too.
 */
export function authorizedAnthropicKey(headers: IncomingHttpHeaders, acceptedDigests: readonly Buffer[]): number | undefined {
  if (acceptedDigests.length === 0) return authOff;
  const key = headers['x-api-key'];
  if (typeof key === 'string' && key !== '') {
    const index = acceptedKeyIndex(key, acceptedDigests);
    return index >= 0 ? index : undefined;
  }
  return authorizedKey(headers.authorization, acceptedDigests);
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
    next(authorizedKey(req.headers.authorization, acceptedDigests()) === undefined ? new AuthenticationError() : undefined);
  };
}
