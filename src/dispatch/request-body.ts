import { valueAfterKey } from './json-bytes.js';

const modelKey = Buffer.from('"model"');
const quote = 0x22;
const backslash = 0x5c;

/** Index just past the string literal that starts at `start` (a quote), or -1 when unterminated. */
function endOfString(raw: Buffer, start: number): number {
  for (let i = start + 1; i < raw.length; i++) {
    const byte = raw[i];
    if (byte === backslash) i++;
    else if (byte === quote) return i + 1;
  }
  return -1;
}

/** Object/array nesting depth at `end`, outside strings; `raw` is known to be valid JSON. */
function depthAt(raw: Buffer, end: number): number {
  let depth = 0;
  for (let i = 0; i < end; i++) {
    const byte = raw[i];
    if (byte === quote) {
      const close = endOfString(raw, i);
      if (close < 0) return -1;
      i = close - 1;
    } else if (byte === 0x7b || byte === 0x5b) depth++;
    else if (byte === 0x7d || byte === 0x5d) depth--;
  }
  return depth;
}

/**
 * Where the value of the top-level `"model"` key sits in a raw JSON body, as [start, end) of its
 * string literal; undefined when that cannot be told for certain from bytes alone. Certain means:
 * the body parsed to an object whose `model` is `model`, `"model"` occurs exactly once in the raw
 * bytes (a duplicate or nested key, or `"model"` as a value, leaves it ambiguous), that
 * occurrence is a key at depth 1, and its literal decodes to `model`. An unescaped `"` always
 * delimits a string in valid JSON, so a match cannot lie inside another string.
 */
export function locateModel(raw: Buffer, model: string): readonly [number, number] | undefined {
  const at = raw.indexOf(modelKey);
  if (at < 0 || raw.indexOf(modelKey, at + modelKey.length) >= 0) return undefined;
  const i = valueAfterKey(raw, at + modelKey.length);
  if (i < 0 || raw[i] !== quote) return undefined;
  const end = endOfString(raw, i);
  if (end < 0 || depthAt(raw, at) !== 1) return undefined;
  const literal = raw.toString('utf8', i, end);
  // The common literal needs no decoding; escapes (\u0041...) are compared decoded.
  if (literal !== `"${model}"` && JSON.parse(literal) !== model) return undefined;
  return [i, end];
}

/**
 * A client's JSON body, kept as received, with the one rewrite dispatch makes: the `model` each
 * candidate gets. When the model's place in the raw bytes is certain, the candidate's model is
 * spliced in and every other byte goes upstream untouched; otherwise the parsed document is
 * serialised again with the new model.
 *
 * The parsed document is kept only for that second case. Kept always, it was most of what the
 * gateway's young-generation collections promoted to the old generation (0.9 MB a collection
 * under load; 0.26 MB without it).
 */
export class RequestBody {
  readonly raw: Buffer;
  private readonly model: string;
  private readonly span: readonly [number, number] | undefined;
  private readonly document: Readonly<Record<string, unknown>> | undefined;

  constructor(raw: Buffer, document: Readonly<Record<string, unknown>>, model: string) {
    this.raw = raw;
    this.model = model;
    this.span = locateModel(raw, model);
    this.document = this.span ? undefined : document;
  }

  /** The body as the candidate serving `model` gets it. */
  withModel(model: string): Buffer {
    if (model === this.model) return this.raw;
    if (!this.span) return Buffer.from(JSON.stringify({ ...this.document, model }));
    const [start, end] = this.span;
    const literal = JSON.stringify(model);
    const length = start + Buffer.byteLength(literal) + (this.raw.length - end);
    const out = Buffer.allocUnsafe(length);
    this.raw.copy(out, 0, 0, start);
    const written = out.write(literal, start);
    this.raw.copy(out, start + written, end);
    return out;
  }
}
