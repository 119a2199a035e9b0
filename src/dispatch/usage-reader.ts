import { createParser } from 'eventsource-parser';
import type { UsageFormat } from '../protocols/endpoints.js';
import { skipJsonWhitespace, valueAfterKey } from './json-bytes.js';

export interface Usage {
  readonly promptTokens: number | null;
  readonly completionTokens: number | null;
}

const noUsage: Usage = { promptTokens: null, completionTokens: null };

/**
 * What is kept of a stream's end to find its usage, which is in the last event before [DONE]:
 * at most this many chunks and bytes (but always the last two chunks). Bounded by count too:
 * with thousands of streams open, a 16 KB window of small chunks per stream was a large share
 * of the gateway's memory.
 */
const streamTailChunks = 8;
const streamTailBytes = 16 * 1024;
/** A JSON answer larger than this is relayed without reading its usage. */
const jsonBodyBytes = 1024 * 1024;
/** What is kept of a stream's start, where Anthropic reports the input tokens (`message_start`). */
const streamHeadBytes = 8 * 1024;

const usageKey = Buffer.from('"usage"');
const quote = 0x22;
const backslash = 0x5c;
const openBrace = 0x7b;
const closeBrace = 0x7d;
const openBracket = 0x5b;
const closeBracket = 0x5d;
const newline = 0x0a;

function toCount(value: unknown): number | null {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 ? value : null;
}

function usageFrom(usage: unknown): Usage | undefined {
  if (typeof usage !== 'object' || usage === null) return undefined;
  const { prompt_tokens: prompt, completion_tokens: completion } = usage as Record<string, unknown>;
  return { promptTokens: toCount(prompt), completionTokens: toCount(completion) };
}

function usageOf(document: unknown): Usage | undefined {
  if (typeof document !== 'object' || document === null) return undefined;
  return usageFrom((document as { usage?: unknown }).usage);
}

/** True when the quote at `at` is escaped (an odd run of backslashes before it). */
function isEscaped(raw: Buffer, at: number): boolean {
  let run = 0;
  for (let i = at - 1; i >= 0 && raw[i] === backslash; i--) run++;
  return run % 2 === 1;
}

/**
 * Nesting depth at `at`, counted backwards from the end of a JSON document (depth 0 after its
 * last byte). Only the bytes after `at` are read, and the usage object sits at the end of an
 * answer, so this is short. In valid JSON every unescaped quote delimits a string, so walking
 * back from a closing quote to the previous unescaped one skips the whole string.
 */
function depthFromEnd(raw: Buffer, at: number): number {
  let depth = 0;
  for (let i = raw.length - 1; i >= at; i--) {
    const byte = raw[i];
    if (byte === quote) {
      do i--;
      while (i >= at && (raw[i] !== quote || isEscaped(raw, i)));
    } else if (byte === closeBrace || byte === closeBracket) depth++;
    else if (byte === openBrace || byte === openBracket) depth--;
  }
  return depth;
}

/** End (exclusive) of the object that opens at `start`, or -1. */
function endOfObject(raw: Buffer, start: number, limit: number): number {
  let depth = 0;
  for (let i = start; i < limit; i++) {
    const byte = raw[i];
    if (byte === quote) {
      for (i++; i < limit && raw[i] !== quote; i++) if (raw[i] === backslash) i++;
    } else if (byte === openBrace || byte === openBracket) depth++;
    else if (byte === closeBrace || byte === closeBracket) {
      if (--depth === 0) return i + 1;
    }
  }
  return -1;
}

const promptTokensKey = Buffer.from('prompt_tokens');
const completionTokensKey = Buffer.from('completion_tokens');

function isDigit(byte: number | undefined): byte is number {
  return byte !== undefined && byte >= 0x30 && byte <= 0x39;
}

/**
 * The usage object that opens at `start`, read from its bytes when it is flat and every value
 * is a plain non-negative integer (what servers send): no string is made and nothing is parsed.
 * Undefined for anything else (nested details, other values, escapes, a malformed object), which
 * the caller parses instead; so the result is always what parsing would have given.
 */
function flatUsageAt(raw: Buffer, start: number): Usage | undefined {
  let promptTokens: number | null = null;
  let completionTokens: number | null = null;
  let i = skipJsonWhitespace(raw, start + 1);
  if (raw[i] === closeBrace) return { promptTokens, completionTokens };
  for (;;) {
    if (raw[i] !== quote) return undefined;
    const keyStart = i + 1;
    const keyEnd = raw.indexOf(quote, keyStart);
    if (keyEnd < 0) return undefined;
    for (let k = keyStart; k < keyEnd; k++) if (raw[k] === backslash) return undefined;
    const valueStart = valueAfterKey(raw, keyEnd + 1);
    if (valueStart < 0) return undefined;
    i = valueStart;
    let value = 0;
    for (; isDigit(raw[i]); i++) value = value * 10 + (raw[i]! - 0x30);
    const digits = i - valueStart;
    // Not a plain integer (a sign, a fraction, an exponent, a leading zero, beyond 2^53), or not a number.
    if (digits === 0 || digits > 15 || (digits > 1 && raw[valueStart] === 0x30) || raw[i] === 0x2e || raw[i] === 0x65 || raw[i] === 0x45) {
      return undefined;
    }
    // A repeated key keeps its last value, as JSON.parse does.
    if (raw.compare(promptTokensKey, 0, promptTokensKey.length, keyStart, keyEnd) === 0) promptTokens = value;
    else if (raw.compare(completionTokensKey, 0, completionTokensKey.length, keyStart, keyEnd) === 0) completionTokens = value;
    i = skipJsonWhitespace(raw, i);
    if (raw[i] === closeBrace) return { promptTokens, completionTokens };
    if (raw[i] !== 0x2c) return undefined;
    i = skipJsonWhitespace(raw, i + 1);
  }
}

/** The usage of the key whose quote is at `keyAt`; undefined when its value is not an object. */
function usageAfterKey(raw: Buffer, keyAt: number): Usage | undefined {
  const i = valueAfterKey(raw, keyAt + usageKey.length);
  if (i < 0 || raw[i] !== openBrace) return undefined;
  const flat = flatUsageAt(raw, i);
  if (flat) return flat;
  const end = endOfObject(raw, i, raw.length);
  return end < 0 ? undefined : usageFrom(JSON.parse(raw.toString('utf8', i, end)));
}

/**
 * The top-level `usage` of a JSON answer without parsing the whole answer: the last `"usage"`
 * key, accepted only when it sits at depth 1. Otherwise (no such key at the top, or a document
 * this cannot read for certain) the whole answer is parsed, as before.
 */
function usageOfJson(raw: Buffer): Usage {
  try {
    const at = raw.lastIndexOf(usageKey);
    if (at < 0) return noUsage;
    if (!isEscaped(raw, at) && depthFromEnd(raw, at + usageKey.length) === 1) {
      const found = usageAfterKey(raw, at);
      if (found) return found;
    }
    return usageOf(JSON.parse(raw.toString('utf8'))) ?? noUsage;
  } catch {
    return noUsage; // not JSON (an upstream that answered text): nothing to read
  }
}

/**
 * The usage on the `data:` line of the last `"usage"` in `raw` (one line per event is how
 * OpenAI-compatible servers send them); undefined when there is none or it cannot be read that
 * way. `startsLine`: the byte before `raw` ended a line.
 */
function usageOfLastLine(raw: Buffer, startsLine: boolean): Usage | undefined {
  const at = raw.lastIndexOf(usageKey);
  if (at < 0) return undefined;
  const newlineBefore = raw.lastIndexOf(newline, at);
  if (newlineBefore < 0 && !startsLine) return undefined;
  const lineEnd = raw.indexOf(newline, at);
  const line = raw.toString('utf8', newlineBefore + 1, lineEnd < 0 ? raw.length : lineEnd);
  if (!line.startsWith('data:')) return undefined;
  try {
    return usageOf(JSON.parse(line.slice(5)));
  } catch {
    return undefined; // an event split over several data lines: the caller parses them whole
  }
}

/**
 * The usage of the last SSE event that carries one: read from its line alone when possible,
 * else every event of the window through the SSE parser (multi-line data, or a last `usage`
 * that is null).
 */
function usageOfStream(raw: Buffer, overflowed: boolean): Usage {
  const found = usageOfLastLine(raw, !overflowed);
  if (found) return found;
  // A window that starts mid-event starts with a partial line: the parser reads it as an
  // unknown field and the event it belongs to as data that is not JSON, both ignored.
  const text = raw.toString('utf8');
  let last: Usage | undefined;
  const parser = createParser({
    onEvent: (event) => {
      if (!event.data.includes('"usage"')) return;
      try {
        last = usageOf(JSON.parse(event.data)) ?? last;
      } catch {
        /* a data line that is not JSON carries no usage */
      }
    },
  });
  parser.feed(text);
  return last ?? noUsage;
}

/** The token counts of an answer's document in a format other than OpenAI's; undefined when it has none. */
function usageOfDocument(format: Exclude<UsageFormat, 'openai' | 'none'>, document: unknown): Usage | undefined {
  if (typeof document !== 'object' || document === null) return undefined;
  const fields = document as Record<string, unknown>;
  switch (format) {
    case 'responses':
    case 'anthropic': {
      // count_tokens answers `{ input_tokens }` at the top; the others nest their usage.
      const usage = (format === 'anthropic' && 'input_tokens' in fields ? fields : fields.usage) as Record<string, unknown> | null | undefined;
      if (typeof usage !== 'object' || usage === null) return undefined;
      return { promptTokens: toCount(usage.input_tokens), completionTokens: toCount(usage.output_tokens) };
    }
    case 'llama':
      if (!('tokens_evaluated' in fields) && !('tokens_predicted' in fields)) return undefined;
      return { promptTokens: toCount(fields.tokens_evaluated), completionTokens: toCount(fields.tokens_predicted) };
  }
}

/** `"key": <plain integer>` as a JSON member, not inside a string (where its quote would be escaped). */
const countPatterns = new Map(
  ['input_tokens', 'output_tokens', 'tokens_evaluated', 'tokens_predicted'].map((key) => [
    key,
    new RegExp(`(?<!\\\\)"${key}"\\s*:\\s*(\\d{1,15})(?![.\\deE])`, 'g'),
  ]),
);

/** The last count given to `key` in `text`; null when there is none. */
function lastCount(text: string, key: string): number | null {
  let last: number | null = null;
  for (const match of text.matchAll(countPatterns.get(key)!)) last = Number(match[1]);
  return last;
}

/**
 * A stream's usage in a format other than OpenAI's, read from the counts its events carry: the
 * Responses API's `response.completed` (input and output tokens), Anthropic's `message_start`
 * (input tokens, at the stream's start) and `message_delta` (the running output tokens, and the
 * input tokens again on newer servers), llama.cpp's last chunk (`tokens_evaluated`,
 * `tokens_predicted`). The last count of each in the kept bytes wins; a usage object too long
 * for the tail window is found by its counts alone.
 */
function usageOfEvents(format: Exclude<UsageFormat, 'openai' | 'none'>, head: string, tail: string): Usage {
  switch (format) {
    case 'responses':
      return { promptTokens: lastCount(tail, 'input_tokens'), completionTokens: lastCount(tail, 'output_tokens') };
    case 'anthropic':
      return { promptTokens: lastCount(tail, 'input_tokens') ?? lastCount(head, 'input_tokens'), completionTokens: lastCount(tail, 'output_tokens') };
    case 'llama':
      return { promptTokens: lastCount(tail, 'tokens_evaluated'), completionTokens: lastCount(tail, 'tokens_predicted') };
  }
}

/**
 * Watches the bytes relayed to the client and reads the token usage the upstream reported: the
 * `usage` of a JSON answer, or of the last SSE event that carries one. Holds a bounded window
 * of the body, never all of a long stream; reads it once, at the end, off the per-chunk path,
 * and parses only the usage object, not the answer.
 */
export class UsageReader {
  /** A JSON answer's chunks, as read: they live only until its end. */
  private chunks: Buffer[] = [];
  /**
   * A stream's window, each chunk copied as a latin1 string (byte for byte). A chunk as read is
   * a view of its own malloc'd socket read buffer: 2,000 streams holding 8 of those pinned ~65 KB
   * of fragmented native memory each. Copies into Node's buffer pool still pinned 8 KB pool
   * slabs by a chunk or two each: 8 MB for 2,000 streams (heap snapshot), for 2.4 MB of chunks.
   * A string is exactly its bytes on the collected heap.
   */
  private window: string[] = [];
  private bytes = 0;
  private overflowed = false;
  /** Anthropic streams: the first bytes, where `message_start` carries the input tokens. */
  private head = '';
  private readonly stream: boolean;
  private readonly format: UsageFormat;

  constructor(stream: boolean, format: UsageFormat = 'openai') {
    this.stream = stream;
    this.format = format;
  }

  push(chunk: Buffer): void {
    if (this.format === 'none') return;
    if (this.format === 'anthropic' && this.stream && this.head.length < streamHeadBytes)
      this.head += chunk.toString('latin1', 0, streamHeadBytes - this.head.length);
    this.bytes += chunk.length;
    if (!this.stream) {
      if (this.overflowed) return;
      this.chunks.push(chunk);
      if (this.bytes > jsonBodyBytes) {
        this.chunks = [];
        this.overflowed = true;
      }
      return;
    }
    const window = this.window;
    window.push(chunk.toString('latin1'));
    // The last two chunks always stay: the usage event may have begun in the one before.
    while (window.length > 2 && (window.length > streamTailChunks || this.bytes - window[0]!.length >= streamTailBytes)) {
      this.bytes -= window.shift()!.length;
      this.overflowed = true;
    }
  }

  read(): Usage {
    const format = this.format;
    if (format === 'none') return noUsage;
    if (this.stream) {
      if (this.window.length === 0) return noUsage;
      if (format !== 'openai') return usageOfEvents(format, this.head, this.window.join(''));
      return usageOfStream(Buffer.from(this.window.join(''), 'latin1'), this.overflowed);
    }
    if (this.chunks.length === 0 || this.overflowed) return noUsage;
    const body = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.bytes);
    if (format === 'openai') return usageOfJson(body);
    try {
      return usageOfDocument(format, JSON.parse(body.toString('utf8'))) ?? noUsage;
    } catch {
      return noUsage; // not JSON: nothing to read
    }
  }
}
