import { describe, expect, it } from 'vitest';
import { digestApiKey } from '../../config/load.js';
import { authOff, authorizedKey, isAcceptedKey } from './auth.js';

describe('authorizedKey', () => {
  const digests = [digestApiKey('key-one'), digestApiKey('key-two')];

  it('accepts a configured bearer key, any of them, and refuses others', () => {
    expect(authorizedKey('Bearer key-one', digests)).toBe(0);
    expect(authorizedKey('bearer   key-two ', digests)).toBe(1);
    expect(authorizedKey('Bearer key-three', digests)).toBeUndefined();
    expect(authorizedKey('key-one', digests)).toBeUndefined();
    expect(authorizedKey(undefined, digests)).toBeUndefined();
  });

  it('lets everything through when no keys are configured', () => {
    expect(authorizedKey(undefined, [])).toBe(authOff);
  });

  it('refuses a key accepted a moment ago once a reload removed it', () => {
    expect(isAcceptedKey('key-one', digests)).toBe(true);
    expect(isAcceptedKey('key-one', [digestApiKey('key-two')])).toBe(false);
    expect(isAcceptedKey('key-one', [])).toBe(false);
  });

  it('keeps answering right past the bound of remembered keys', () => {
    const many = Array.from({ length: 1500 }, (_, i) => `key-${i}`);
    const accepted = many.map(digestApiKey);
    for (const key of many) expect(isAcceptedKey(key, accepted)).toBe(true);
    for (const key of many) expect(isAcceptedKey(key, accepted)).toBe(true);
    expect(isAcceptedKey('key-1500', accepted)).toBe(false);
  });
});
