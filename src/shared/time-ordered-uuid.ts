import { randomFillSync } from 'node:crypto';

const hexDigits = Buffer.from('0123456789abcdef', 'latin1');
/** Random bytes for 256 ids, refilled from the CSPRNG when used up (as Node's own randomUUID buffers 128). */
const entropy = Buffer.allocUnsafeSlow(16 * 256);
let entropyAt = entropy.length;
const text = Buffer.allocUnsafeSlow(36);

/**
 * A time-ordered (version 7, RFC 9562) UUID, written as one flat string: the first 48 bits are
 * `now` in Unix milliseconds, the other 74 free bits random (ids of the same millisecond are
 * not ordered among themselves).
 *
 * Time-ordered because event ids are the primary key of `route_dispatch_log` and generated
 * request ids are indexed there: random ids put every new index entry on a random leaf page,
 * and once an index outgrows the database's cache each insert reads and writes a page of it.
 * In the embedded store (16 MB of shared buffers) that doubled the cost of a row in a table of
 * 300,000 rows (docs/embedded-mode.md); ids that grow with time land on the rightmost pages.
 *
 * Flat because Node's `randomUUID` builds its string from 20 concatenations: a tree of cons
 * strings that every later use (a header, a Map key, the event's JSON) flattens again, and that
 * the young generation copies while an event waits for its job. Two ids a request made that way
 * cost about 4,000 instructions more (callgrind, `npm run bench:instructions`).
 */
export function timeOrderedUuid(now: number = Date.now()): string {
  if (entropyAt === entropy.length) {
    randomFillSync(entropy);
    entropyAt = 0;
  }
  const at = entropyAt;
  entropyAt += 16;
  entropy[at] = Math.floor(now / 2 ** 40) & 0xff;
  entropy[at + 1] = Math.floor(now / 2 ** 32) & 0xff;
  entropy[at + 2] = (now >>> 24) & 0xff;
  entropy[at + 3] = (now >>> 16) & 0xff;
  entropy[at + 4] = (now >>> 8) & 0xff;
  entropy[at + 5] = now & 0xff;
  entropy[at + 6] = (entropy[at + 6]! & 0x0f) | 0x70;
  entropy[at + 8] = (entropy[at + 8]! & 0x3f) | 0x80;
  let out = 0;
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) text[out++] = 0x2d;
    const byte = entropy[at + i]!;
    text[out++] = hexDigits[byte >> 4]!;
    text[out++] = hexDigits[byte & 0x0f]!;
  }
  return text.toString('latin1', 0, 36);
}
