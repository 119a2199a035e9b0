import { InvalidRequestError } from '../errors.js';

/**
 * What dispatch reads of a client's JSON body, found by one pass over its bytes: no parsed
 * document is built. See docs/architecture.md, "Reading a request body".
 */
export interface RequestFields {
  /** The top-level `model`, decoded. */
  readonly model: string;
  /** Where its string literal sits in the raw bytes, quotes included: [start, end). */
  readonly modelSpan: readonly [number, number];
  readonly stream: boolean;
  /** Estimated prompt tokens plus the completion asked for (`max_completion_tokens` ?? `max_tokens`). */
  readonly requiredContext: number;
}

export interface ScanLimits {
  /** Deepest nesting of objects and arrays accepted; a deeper body is refused at the first byte past it. */
  readonly maxJsonDepth: number;
}

/** Bodies up to this size are scanned in one go; larger ones a slice per event-loop turn ({@link scanRequestInSlices}). */
export const syncScanBytes = 64 * 1024;

/** Characters per token of typical English and code; an estimate, erring on the large side. */
const charactersPerToken = 3.5;

const quote = 0x22;
const backslash = 0x5c;
const comma = 0x2c;
const colon = 0x3a;
const openBrace = 0x7b;
const closeBrace = 0x7d;
const openBracket = 0x5b;
const closeBracket = 0x5d;

/** What the scanner expects next. */
const enum Expect {
  Value,
  /** After `{`: a key or `}`. */
  FirstKey,
  /** After `,` in an object. */
  Key,
  Colon,
  /** After a member's value: `,` or `}`. */
  ObjectNext,
  /** After `[`: a value or `]`. */
  FirstElement,
  /** After an element: `,` or `]`. */
  ArrayNext,
  /** After the top-level value: nothing but whitespace. */
  End,
}

const enum Container {
  Object = 1,
  Array = 2,
}

/** Keys the scanner tells apart; every other key is `Other`. */
const enum Key {
  Other,
  Model,
  Stream,
  MaxTokens,
  MaxCompletionTokens,
  Messages,
  Prompt,
  Input,
  Content,
  Text,
  System,
  Instructions,
  MaxOutputTokens,
  NPredict,
}

const keyNames: ReadonlyMap<string, Key> = new Map([
  ['model', Key.Model],
  ['stream', Key.Stream],
  ['max_tokens', Key.MaxTokens],
  ['max_completion_tokens', Key.MaxCompletionTokens],
  ['messages', Key.Messages],
  ['prompt', Key.Prompt],
  ['input', Key.Input],
  ['content', Key.Content],
  ['text', Key.Text],
  ['system', Key.System],
  ['instructions', Key.Instructions],
  ['max_output_tokens', Key.MaxOutputTokens],
  ['n_predict', Key.NPredict],
]);

/** The bytes at `at` spell `word` (ASCII). */
function spells(raw: Buffer, at: number, word: string): boolean {
  for (let k = 0; k < word.length; k++) if (raw[at + k] !== word.charCodeAt(k)) return false;
  return true;
}

/**
 * The key whose plain ASCII name is at [start, end), found by its length and then its bytes:
 * no string is made for a key, which was most of what scanning a short body cost.
 */
function asciiKey(raw: Buffer, start: number, end: number): Key {
  switch (end - start) {
    case 4:
      return spells(raw, start, 'text') ? Key.Text : Key.Other;
    case 5:
      return spells(raw, start, 'model') ? Key.Model : spells(raw, start, 'input') ? Key.Input : Key.Other;
    case 6:
      return spells(raw, start, 'stream') ? Key.Stream : spells(raw, start, 'prompt') ? Key.Prompt : spells(raw, start, 'system') ? Key.System : Key.Other;
    case 7:
      return spells(raw, start, 'content') ? Key.Content : Key.Other;
    case 8:
      return spells(raw, start, 'messages') ? Key.Messages : Key.Other;
    case 9:
      return spells(raw, start, 'n_predict') ? Key.NPredict : Key.Other;
    case 10:
      return spells(raw, start, 'max_tokens') ? Key.MaxTokens : Key.Other;
    case 12:
      return spells(raw, start, 'instructions') ? Key.Instructions : Key.Other;
    case 17:
      return spells(raw, start, 'max_output_tokens') ? Key.MaxOutputTokens : Key.Other;
    case 21:
      return spells(raw, start, 'max_completion_tokens') ? Key.MaxCompletionTokens : Key.Other;
    default:
      return Key.Other;
  }
}

/** `model` in any case, as the five ASCII bytes at `start` (upper- and lower-case letters differ by 0x20). */
function isModelInAnyCase(raw: Buffer, start: number, end: number): boolean {
  return (
    end - start === 5 &&
    (raw[start]! | 0x20) === 0x6d &&
    (raw[start + 1]! | 0x20) === 0x6f &&
    (raw[start + 2]! | 0x20) === 0x64 &&
    (raw[start + 3]! | 0x20) === 0x65 &&
    (raw[start + 4]! | 0x20) === 0x6c
  );
}

/** The kind of a top-level member's value, for the type checks of the fields the gateway reads. */
type ValueKind = 'string' | 'number' | 'true' | 'false' | 'null' | 'object' | 'array';

/** A top-level field the gateway reads: its kind and where its value sits. */
interface TopLevelValue {
  readonly kind: ValueKind;
  readonly start: number;
  readonly end: number;
  /** A string with an escape, which must be decoded to be read. */
  readonly escaped: boolean;
  /** A string with bytes past ASCII. */
  readonly nonAscii: boolean;
}

/**
 * Bytes that may stand in a string as they are, one character each: printable ASCII but the
 * quote and the backslash (and DEL, so that a plain literal holds no control character). What a
 * prompt is nearly all made of, checked with one load a byte.
 */
const plainStringByte = new Uint8Array(256);
for (let byte = 0x20; byte < 0x7f; byte++) plainStringByte[byte] = 1;
plainStringByte[0x22] = 0;
plainStringByte[0x5c] = 0;

/** Bodies from this size on have their long strings read four bytes at a time. */
const wordScanBytes = 256;

/** Top-level keys are few; past this many, duplicates are found with a Set instead of a look through them. */
const fewKeys = 16;

function invalidJson(): InvalidRequestError {
  return new InvalidRequestError('request body is not valid JSON', null, 'invalid_json');
}

function isWhitespace(byte: number): boolean {
  return byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;
}

function isDigit(byte: number): boolean {
  return byte >= 0x30 && byte <= 0x39;
}

function isHexDigit(byte: number | undefined): boolean {
  return byte !== undefined && ((byte >= 0x30 && byte <= 0x39) || ((byte | 0x20) >= 0x61 && (byte | 0x20) <= 0x66));
}

/**
 * A strict JSON scanner (it accepts exactly what `JSON.parse` accepts, byte for byte: a property
 * test holds it to that) that reads what dispatch needs and nothing more:
 * - the top-level `model`, `stream`, `max_tokens`, `max_completion_tokens` and `messages`,
 *   checked for type; where `model`'s literal sits, so the candidate's model can be spliced in;
 * - every top-level key, so that a key sent twice (`model` in any spelling JSON allows, or in
 *   another case, which some upstream parsers match) is refused rather than read one way here
 *   and another way upstream; so is a `model` key written with escapes, which some upstream
 *   parsers do not decode;
 * - the characters of the prompt (`messages[].content`, its parts' `text`, `prompt`, `input`)
 *   for the context-size estimate.
 *
 * Its cost is linear in the body and stops at the first byte past `maxJsonDepth`; it builds no
 * objects, so a body of a million empty arrays costs what its bytes cost. It is resumable at any
 * byte (see {@link run}), so a large body is read a slice at a time between other work.
 */
class RequestScanner {
  private i = 0;
  private expect = Expect.Value;
  private depth = 0;
  /** Container kind by depth (1 = the top-level object). */
  private readonly containers: number[] = [0];
  /**
   * The current key of the object at each depth, where the prompt estimate needs it (depths 1,
   * 3 and 5 on the paths of `messages`, `prompt` and `input`); `Other` elsewhere.
   */
  private readonly keys: Key[] = [Key.Other];
  /** Inside a string: where it started (its quote), and whether it is a key. -1 outside strings. */
  private stringStart = -1;
  private stringIsKey = false;
  /** Characters of the string being read (UTF-16 units, escapes decoded), for the estimate. */
  private stringCharacters = 0;
  private stringHasEscape = false;
  /** The string has a byte past ASCII (so it must be decoded as UTF-8). */
  private stringNonAscii = false;
  /** Top-level keys so far, as [start, end) of their names while all are plain ASCII and few. */
  private readonly keySpans: number[] = [];
  /** Top-level keys so far, decoded: once one is not plain ASCII, or past {@link fewKeys}. */
  private keySet: Set<string> | undefined;
  private modelField: TopLevelValue | undefined;
  private streamField: TopLevelValue | undefined;
  private maxTokensField: TopLevelValue | undefined;
  private maxCompletionTokensField: TopLevelValue | undefined;
  private maxOutputTokensField: TopLevelValue | undefined;
  private nPredictField: TopLevelValue | undefined;
  private messagesField: TopLevelValue | undefined;
  private modelKeys = 0;
  private modelKeyEscaped = false;
  private duplicateKey: string | undefined;
  private promptCharacters = 0;
  private messages = 0;

  /** `raw`'s whole ArrayBuffer as 32-bit words, for reading long strings four bytes at a time; undefined for short bodies. */
  private readonly words: Uint32Array | undefined;

  constructor(
    private readonly raw: Buffer,
    private readonly limits: ScanLimits,
  ) {
    if (raw.length >= wordScanBytes) this.words = new Uint32Array(raw.buffer, 0, raw.buffer.byteLength >>> 2);
  }

  /**
   * Reads on until `limit` (a byte offset) or the end, whichever comes first.
   * @throws InvalidRequestError at the first byte that is not JSON, or past `maxJsonDepth`.
   */
  run(limit: number): void {
    const raw = this.raw;
    const end = Math.min(limit, raw.length);
    let i = this.i;
    if (this.stringStart >= 0) {
      i = this.continueString(i, end);
      if (this.stringStart >= 0) {
        this.i = i;
        return;
      }
    }
    while (i < end) {
      const byte = raw[i]!;
      if (isWhitespace(byte)) {
        i++;
        continue;
      }
      switch (this.expect) {
        case Expect.Value:
        case Expect.FirstElement:
          if (byte === closeBracket && this.expect === Expect.FirstElement) {
            i = this.close(i, Container.Array);
            break;
          }
          i = this.value(i, end);
          if (this.stringStart >= 0) {
            this.i = i;
            return;
          }
          break;
        case Expect.FirstKey:
        case Expect.Key:
          if (byte === closeBrace && this.expect === Expect.FirstKey) {
            i = this.close(i, Container.Object);
            break;
          }
          if (byte !== quote) throw invalidJson();
          this.openString(i, true);
          i = this.continueString(i + 1, end);
          if (this.stringStart >= 0) {
            this.i = i;
            return;
          }
          break;
        case Expect.Colon:
          if (byte !== colon) throw invalidJson();
          this.expect = Expect.Value;
          i++;
          break;
        case Expect.ObjectNext:
          if (byte === comma) {
            this.expect = Expect.Key;
            i++;
          } else if (byte === closeBrace) i = this.close(i, Container.Object);
          else throw invalidJson();
          break;
        case Expect.ArrayNext:
          if (byte === comma) {
            this.expect = Expect.Value;
            i++;
          } else if (byte === closeBracket) i = this.close(i, Container.Array);
          else throw invalidJson();
          break;
        case Expect.End:
          throw invalidJson();
      }
    }
    this.i = i;
  }

  /** The fields, once the whole body was read. @throws InvalidRequestError naming the first field that is wrong. */
  result(): RequestFields {
    if (this.expect !== Expect.End) throw invalidJson();
    if (this.containers[1] !== Container.Object) throw new InvalidRequestError('request body must be a JSON object', null, 'invalid_body');
    if (this.modelKeys > 1) {
      throw new InvalidRequestError('model: the body has more than one "model" key; send exactly one', 'model', 'duplicate_model_key');
    }
    if (this.modelKeyEscaped) {
      throw new InvalidRequestError(
        'model: write the key "model" without escapes (upstream servers read escaped keys differently)',
        'model',
        'escaped_model_key',
      );
    }
    if (this.duplicateKey !== undefined) {
      throw new InvalidRequestError(`${this.duplicateKey}: the body has this key more than once; send it once`, this.duplicateKey, 'duplicate_key');
    }
    const model = this.model();
    const stream = this.streamField;
    if (stream !== undefined && stream.kind !== 'true' && stream.kind !== 'false' && stream.kind !== 'null') throw invalidType('stream', 'boolean');
    const maxTokens = this.count('max_tokens', this.maxTokensField);
    const maxCompletionTokens = this.count('max_completion_tokens', this.maxCompletionTokensField);
    const maxOutputTokens = this.count('max_output_tokens', this.maxOutputTokensField);
    const messages = this.messagesField;
    if (messages !== undefined && messages.kind !== 'array') throw invalidType('messages', 'array');
    // llama.cpp's n_predict may be -1 (no limit): a hint for the estimate, never a reason to refuse.
    const nPredict = this.nPredictField?.kind === 'number' ? this.numberAt(this.nPredictField.start, this.nPredictField.end) : undefined;
    const completion = maxCompletionTokens ?? maxTokens ?? maxOutputTokens ?? (Number.isSafeInteger(nPredict) ? nPredict : undefined);
    const characters = this.promptCharacters + this.messages * 8;
    return {
      model: model.value,
      modelSpan: model.span,
      stream: stream?.kind === 'true',
      requiredContext: Math.ceil(characters / charactersPerToken) + (completion !== undefined && completion > 0 ? completion : 0),
    };
  }

  private model(): { value: string; span: readonly [number, number] } {
    const fail = (message: string) => new InvalidRequestError(`model: ${message}`, 'model', 'missing_model');
    const field = this.modelField;
    if (field?.kind !== 'string') throw fail('is required and must be a string');
    const value = field.escaped
      ? (JSON.parse(this.raw.toString('utf8', field.start, field.end)) as string)
      : this.raw.toString(field.nonAscii ? 'utf8' : 'latin1', field.start + 1, field.end - 1);
    if (value.length === 0) throw fail('must not be empty');
    if (value.length > 256) throw fail('is longer than 256 characters');
    // Model names reach upstream bodies, URLs and logs: printable only. A plain literal has none
    // (bytes below 0x20 are not JSON, DEL is not plain): only a decoded one needs the look.
    if ((field.escaped || field.nonAscii) && /[\u0000-\u001f\u007f]/.test(value)) throw fail('must not contain control characters');
    return { value, span: [field.start, field.end] };
  }

  /** A count field: undefined when absent or null. @throws unless a non-negative safe integer. */
  private count(name: string, field: TopLevelValue | undefined): number | undefined {
    if (field === undefined || field.kind === 'null') return undefined;
    const value = field.kind === 'number' ? this.numberAt(field.start, field.end) : Number.NaN;
    if (!Number.isSafeInteger(value) || value < 0) throw invalidType(name, 'a non-negative integer');
    return value;
  }

  /** The number literal at [start, end): plain digits (nearly every count) read in place, anything else by `Number`. */
  private numberAt(start: number, end: number): number {
    const raw = this.raw;
    if (end - start > 15) return Number(raw.toString('latin1', start, end));
    let value = 0;
    for (let i = start; i < end; i++) {
      const digit = raw[i]! - 0x30;
      if (digit < 0 || digit > 9) return Number(raw.toString('latin1', start, end));
      value = value * 10 + digit;
    }
    return value;
  }

  /** A value starting at `i` (not whitespace). Returns where scanning goes on. */
  private value(i: number, end: number): number {
    const raw = this.raw;
    const byte = raw[i]!;
    if (byte === quote) {
      this.openString(i, false);
      return this.continueString(i + 1, end);
    }
    if (byte === openBrace || byte === openBracket) return this.open(i, byte === openBrace ? Container.Object : Container.Array);
    let after: number;
    let kind: ValueKind;
    if (byte === 0x74) {
      after = this.literal(i, 'true');
      kind = 'true';
    } else if (byte === 0x66) {
      after = this.literal(i, 'false');
      kind = 'false';
    } else if (byte === 0x6e) {
      after = this.literal(i, 'null');
      kind = 'null';
    } else if (byte === 0x2d || isDigit(byte)) {
      after = this.number(i);
      kind = 'number';
    } else throw invalidJson();
    this.valueDone(kind, i, after);
    return after;
  }

  /**
   * A literal is short, so it is read whole even across a slice limit; the whole body is
   * in `raw`, a limit only bounds how much is read in one go.
   */
  private literal(i: number, word: string): number {
    for (let k = 1; k < word.length; k++) if (this.raw[i + k] !== word.charCodeAt(k)) throw invalidJson();
    return i + word.length;
  }

  /** `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, as JSON has it. Returns the index after it. */
  private number(start: number): number {
    const raw = this.raw;
    let i = start;
    if (raw[i] === 0x2d) i++;
    if (raw[i] === 0x30) i++;
    else if (raw[i] !== undefined && raw[i]! >= 0x31 && raw[i]! <= 0x39) while (raw[i] !== undefined && isDigit(raw[i]!)) i++;
    else throw invalidJson();
    if (raw[i] === 0x2e) {
      i++;
      if (raw[i] === undefined || !isDigit(raw[i]!)) throw invalidJson();
      while (raw[i] !== undefined && isDigit(raw[i]!)) i++;
    }
    if (raw[i] === 0x65 || raw[i] === 0x45) {
      i++;
      if (raw[i] === 0x2b || raw[i] === 0x2d) i++;
      if (raw[i] === undefined || !isDigit(raw[i]!)) throw invalidJson();
      while (raw[i] !== undefined && isDigit(raw[i]!)) i++;
    }
    return i;
  }

  private open(i: number, container: Container): number {
    const depth = this.depth + 1;
    if (depth > this.limits.maxJsonDepth) {
      throw new InvalidRequestError(`request body nests objects and arrays deeper than ${this.limits.maxJsonDepth} levels`, null, 'json_too_deep');
    }
    if (depth === 2) this.topLevelValue(container === Container.Object ? 'object' : 'array', i, i + 1);
    if (depth === 3 && this.keys[1] === Key.Messages && this.containers[2] === Container.Array) this.messages++;
    this.depth = depth;
    this.containers[depth] = container;
    this.keys[depth] = Key.Other;
    this.expect = container === Container.Object ? Expect.FirstKey : Expect.FirstElement;
    return i + 1;
  }

  private close(i: number, container: Container): number {
    if (this.containers[this.depth] !== container) throw invalidJson();
    this.depth--;
    this.afterValue();
    return i + 1;
  }

  private afterValue(): void {
    const container = this.containers[this.depth];
    this.expect = this.depth === 0 ? Expect.End : container === Container.Object ? Expect.ObjectNext : Expect.ArrayNext;
  }

  /** A scalar value ended: record it when it is a top-level field, then expect what follows it. */
  private valueDone(kind: ValueKind, start: number, end: number): void {
    if (this.depth === 1) this.topLevelValue(kind, start, end);
    if (this.depth === 0) this.containers[1] = 0;
    this.afterValue();
  }

  private topLevelValue(kind: ValueKind, start: number, end: number): void {
    switch (this.keys[1]) {
      case Key.Model:
        this.modelField = { kind, start, end, escaped: kind === 'string' && this.stringHasEscape, nonAscii: kind === 'string' && this.stringNonAscii };
        return;
      case Key.Stream:
        this.streamField = { kind, start, end, escaped: false, nonAscii: false };
        return;
      case Key.MaxTokens:
        this.maxTokensField = { kind, start, end, escaped: false, nonAscii: false };
        return;
      case Key.MaxCompletionTokens:
        this.maxCompletionTokensField = { kind, start, end, escaped: false, nonAscii: false };
        return;
      case Key.MaxOutputTokens:
        this.maxOutputTokensField = { kind, start, end, escaped: false, nonAscii: false };
        return;
      case Key.NPredict:
        this.nPredictField = { kind, start, end, escaped: false, nonAscii: false };
        return;
      case Key.Messages:
        this.messagesField = { kind, start, end, escaped: false, nonAscii: false };
        return;
      default:
    }
  }

  private openString(start: number, isKey: boolean): void {
    this.stringStart = start;
    this.stringIsKey = isKey;
    this.stringCharacters = 0;
    this.stringHasEscape = false;
    this.stringNonAscii = false;
  }

  /**
   * Reads a string's bytes from `i` until its closing quote or `end`. Counts its characters as
   * UTF-16 units (an escape is one; a four-byte UTF-8 sequence two), as `String.length` would,
   * so the estimate matches what a parse would have measured. Stops only between characters.
   */
  private continueString(from: number, end: number): number {
    const raw = this.raw;
    let i = from;
    let characters = this.stringCharacters;
    for (;;) {
      // Printable ASCII is nearly all of a prompt: one character a byte, nothing to check.
      const run = i;
      if (this.words !== undefined) i = this.skipPlainWords(i, end);
      while (i < end && plainStringByte[raw[i]!] === 1) i++;
      characters += i - run;
      const byte = raw[i];
      if (i >= end) {
        if (i >= raw.length) throw invalidJson();
        this.stringCharacters = characters;
        return i;
      }
      if (byte === quote) break;
      if (byte! < 0x20) throw invalidJson();
      if (byte === backslash) {
        const escaped = raw[i + 1];
        if (escaped === 0x75) {
          if (!isHexDigit(raw[i + 2]) || !isHexDigit(raw[i + 3]) || !isHexDigit(raw[i + 4]) || !isHexDigit(raw[i + 5])) throw invalidJson();
          i += 6;
        } else if (
          escaped === quote ||
          escaped === backslash ||
          escaped === 0x2f ||
          escaped === 0x62 ||
          escaped === 0x66 ||
          escaped === 0x6e ||
          escaped === 0x72 ||
          escaped === 0x74
        ) {
          i += 2;
        } else throw invalidJson();
        this.stringHasEscape = true;
        characters++;
        continue;
      }
      // Continuation bytes (10xxxxxx) are not characters of their own; a four-byte sequence is two UTF-16 units.
      if ((byte! & 0xc0) !== 0x80) characters += byte! >= 0xf0 ? 2 : 1;
      this.stringNonAscii = true;
      i++;
    }
    const start = this.stringStart;
    this.stringStart = -1;
    const after = i + 1;
    if (this.stringIsKey) this.keyDone(start, after);
    else {
      if (this.isPromptText()) this.promptCharacters += characters;
      this.valueDone('string', start, after);
    }
    return after;
  }

  /**
   * Skips plain string bytes four at a time (a bit test per word for any byte below 0x20, a
   * quote, a backslash, DEL or one past ASCII): a prompt's text was most of what scanning a body
   * cost, one byte at a time. Returns where the first word with such a byte starts, or where
   * whole words end before `end`; the byte loop takes it from there.
   */
  private skipPlainWords(from: number, end: number): number {
    const { raw, words } = this;
    const offset = raw.byteOffset;
    let i = from;
    while (i < end && ((offset + i) & 3) !== 0 && plainStringByte[raw[i]!] === 1) i++;
    if (((offset + i) & 3) !== 0) return i;
    let word = (offset + i) >>> 2;
    const stop = (offset + end) >>> 2;
    while (word < stop) {
      const x = words![word]!;
      const quotes = x ^ 0x22222222;
      const backslashes = x ^ 0x5c5c5c5c;
      const deletes = x ^ 0x7f7f7f7f;
      // The classic "has a byte below n" and "has a zero byte" tests, on the high bit of each
      // byte; that bit of `x` itself marks bytes past ASCII.
      const special =
        ((x - 0x20202020) & ~x) | ((quotes - 0x01010101) & ~quotes) | ((backslashes - 0x01010101) & ~backslashes) | ((deletes - 0x01010101) & ~deletes) | x;
      if (special & 0x80808080) break;
      word++;
    }
    return (word << 2) - offset;
  }

  private keyDone(start: number, end: number): void {
    const depth = this.depth;
    this.expect = Expect.Colon;
    const plain = !this.stringHasEscape && !this.stringNonAscii;
    if (depth === 1) {
      if (plain && this.keySet === undefined && this.keySpans.length < fewKeys * 2) {
        this.keys[1] = asciiKey(this.raw, start + 1, end - 1);
        if (isModelInAnyCase(this.raw, start + 1, end - 1)) this.modelKeys++;
        if (this.isRepeatedSpan(start + 1, end - 1)) this.duplicateKey ??= this.raw.toString('latin1', start + 1, end - 1);
        this.keySpans.push(start + 1, end - 1);
        return;
      }
      const key = this.stringText(start, end);
      this.keys[1] = keyNames.get(key) ?? Key.Other;
      if (key.length === 5 && key.toLowerCase() === 'model') {
        this.modelKeys++;
        if (key === 'model' && this.stringHasEscape) this.modelKeyEscaped = true;
      }
      const keySet = this.decodedKeys();
      if (keySet.has(key)) this.duplicateKey ??= key;
      keySet.add(key);
    } else if ((depth === 3 || depth === 5) && this.isOnPromptPath()) {
      this.keys[depth] = plain ? asciiKey(this.raw, start + 1, end - 1) : (keyNames.get(this.stringText(start, end)) ?? Key.Other);
    }
  }

  /** The value of the string literal just read, at [start, end) with its quotes. */
  private stringText(start: number, end: number): string {
    if (this.stringHasEscape) return JSON.parse(this.raw.toString('utf8', start, end)) as string;
    return this.raw.toString(this.stringNonAscii ? 'utf8' : 'latin1', start + 1, end - 1);
  }

  /** A plain key at [start, end) has the bytes of one seen before (plain keys are equal exactly when their bytes are). */
  private isRepeatedSpan(start: number, end: number): boolean {
    const { raw, keySpans } = this;
    const length = end - start;
    for (let k = 0; k < keySpans.length; k += 2) {
      const other = keySpans[k]!;
      if (keySpans[k + 1]! - other === length && raw.compare(raw, start, end, other, other + length) === 0) return true;
    }
    return false;
  }

  /** Switches to decoded keys (a key that is not plain ASCII, or many keys): the plain ones so far become strings. */
  private decodedKeys(): Set<string> {
    if (this.keySet === undefined) {
      this.keySet = new Set();
      const { raw, keySpans } = this;
      for (let k = 0; k < keySpans.length; k += 2) this.keySet.add(raw.toString('latin1', keySpans[k], keySpans[k + 1]));
      keySpans.length = 0;
    }
    return this.keySet;
  }

  /** Inside a top-level key whose text is prompt, where the estimate reads keys. */
  private isOnPromptPath(): boolean {
    const top = this.keys[1];
    return top === Key.Messages || top === Key.Prompt || top === Key.Input || top === Key.System;
  }

  /**
   * The string value that just ended is prompt text, in any of the shapes the protocols send it:
   * - `prompt`, `input`, `system` (Anthropic), `instructions` (Responses): a string, strings in
   *   an array, or the `text` of objects in that array;
   * - a message's `content` (`messages[]`, and the Responses API's `input[]` items): a string,
   *   strings in an array, or the `text` of the parts in that array.
   */
  private isPromptText(): boolean {
    const { depth, containers, keys } = this;
    const top = keys[1];
    if (depth === 1) return top === Key.Prompt || top === Key.Input || top === Key.System || top === Key.Instructions;
    if (top !== Key.Messages && top !== Key.Prompt && top !== Key.Input && top !== Key.System) return false;
    if (containers[2] !== Container.Array) return false;
    if (top !== Key.Messages) {
      if (depth === 2) return true;
      if (depth === 3 && containers[3] === Container.Object && keys[3] === Key.Text) return true;
      if (top !== Key.Input) return false;
    }
    if (depth < 3 || containers[3] !== Container.Object || keys[3] !== Key.Content) return false;
    if (depth === 3) return true;
    if (containers[4] !== Container.Array) return false;
    return depth === 4 || (depth === 5 && containers[5] === Container.Object && keys[5] === Key.Text);
  }
}

function invalidType(param: string, expected: string): InvalidRequestError {
  return new InvalidRequestError(`${param}: Invalid input: expected ${expected}`, param, 'invalid_type');
}

function emptyBody(): InvalidRequestError {
  return new InvalidRequestError('request body must be a JSON object', null, 'invalid_body');
}

/** Reads a body of up to {@link syncScanBytes} at once. @throws InvalidRequestError */
export function scanRequest(raw: Buffer, limits: ScanLimits): RequestFields {
  if (raw.length === 0) throw emptyBody();
  const scanner = new RequestScanner(raw, limits);
  scanner.run(raw.length);
  return scanner.result();
}

/**
 * Reads a large body `sliceBytes` at a time, yielding to the event loop in between, so that
 * reading a 10 MB body never holds up health checks or the streams in flight.
 * @throws InvalidRequestError
 */
export async function scanRequestInSlices(raw: Buffer, limits: ScanLimits, sliceBytes = syncScanBytes): Promise<RequestFields> {
  if (raw.length === 0) throw emptyBody();
  const scanner = new RequestScanner(raw, limits);
  for (let limit = sliceBytes; ; limit += sliceBytes) {
    scanner.run(limit);
    if (limit >= raw.length) break;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return scanner.result();
}
