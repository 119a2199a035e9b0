/** Reading raw JSON bytes in place, for the two readers that avoid a parse (request model, answer usage). */

function isJsonWhitespace(byte: number | undefined): boolean {
  return byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d;
}

/** The index of the first byte at or after `at` that is not JSON whitespace. */
export function skipJsonWhitespace(raw: Buffer, at: number): number {
  let i = at;
  while (isJsonWhitespace(raw[i])) i++;
  return i;
}

/** Where the value starts after a key that ends just before `at` (`: ` between them); -1 without the colon. */
export function valueAfterKey(raw: Buffer, at: number): number {
  const colon = skipJsonWhitespace(raw, at);
  return raw[colon] === 0x3a ? skipJsonWhitespace(raw, colon + 1) : -1;
}
