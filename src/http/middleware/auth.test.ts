import { describe, expect, it } from 'vitest';
import { digestApiKey } from '../../config/load.js';
import { isAcceptedKey, isAuthorized } from './auth.js';

describe('isAuthorized', () => {
  const digests = [digestApiKey('key-one'), digestApiKey('key-two')];

  it('accepts a configured bearer key, any of them, and refuses others', () => {
    expect(isAuthorized('Bearer key-one', digests)).toBe(true);
    expect(isAuthorized('bearer   key-two ', digests)).toBe(true);
    expect(isAuthorized('Bearer key-three', digests)).toBe(false);
    expect(isAuthorized('key-one', digests)).toBe(false);
    expect(isAuthorized(undefined, digests)).toBe(false);
  });

  it('lets everything through when no keys are configured', () => {
    expect(isAuthorized(undefined, [])).toBe(true);
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
