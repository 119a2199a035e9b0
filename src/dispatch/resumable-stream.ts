import type { ServerResponse } from 'node:http';
import type { RelayTarget } from '../upstream/send-attempt.js';

const lineFeed = 0x0a;
const carriageReturn = 0x0d;

/** Where the first event of `bytes` ends (just past its blank line), or -1 when none is complete. */
function eventEnd(bytes: Buffer, from: number): number {
  for (let i = bytes.indexOf(lineFeed, from); i >= 0; i = bytes.indexOf(lineFeed, i + 1)) {
    // `\n\n`, or `\r\n\r\n`: a line end right after a line end.
    if (bytes[i + 1] === lineFeed) return i + 2;
    if (bytes[i + 1] === carriageReturn && bytes[i + 2] === lineFeed) return i + 3;
  }
  return -1;
}

/** The data of one SSE event (its `data:` lines joined), undefined for an event without data (a comment, a ping). */
function dataOf(event: string): string | undefined {
  let data: string | undefined;
  for (const line of event.split(/\r?\n/)) {
    if (!line.startsWith('data:')) continue;
    const value = line.charCodeAt(5) === 0x20 ? line.slice(6) : line.slice(5);
    data = data === undefined ? value : `${data}\n${value}`;
  }
  return data;
}

interface Chunk {
  id?: unknown;
  model?: unknown;
  created?: unknown;
  choices?: Array<{ index?: unknown; text?: unknown; delta?: Record<string, unknown>; finish_reason?: unknown }>;
}

/**
 * A chat or completions stream relayed so that it can be resumed on another candidate if it
 * breaks (docs/architecture.md, "Resuming a broken stream"). It stands between the upstream and
 * the client and relays whole events only, so a break never leaves half an event with the
 * client; it reads each event for the text delivered so far and for what makes a stream
 * unresumable (a tool call in progress, more than one choice, an answer already finished).
 * A continuation from another candidate is relayed into the same client stream as if it were
 * the same answer: the first candidate's `id`, `model` and `created` on every chunk, and no
 * second role chunk.
 *
 * Only streams of virtual models with `resume` on pay for this (a parse of every event); the
 * text is kept as the pieces the events carried, not as copies of the chunks.
 */
export class ResumableStream implements RelayTarget {
  private readonly texts: string[] = [];
  /** Content events delivered to the client. */
  private contentEvents = 0;
  private partial: Buffer | undefined;
  private id: unknown;
  private model: unknown;
  private created: unknown;
  private continuing = false;
  private toolCall = false;
  private plain = true;
  private finished = false;

  constructor(
    private readonly res: ServerResponse,
    private readonly kind: 'chat' | 'completions',
  ) {}

  /** Relays what of `chunk` completes events; keeps the rest for the next chunk. False while the client's buffer is full. */
  write(chunk: Buffer): boolean {
    const bytes = this.partial === undefined ? chunk : Buffer.concat([this.partial, chunk]);
    let start = 0;
    let writable = true;
    for (let end = eventEnd(bytes, 0); end >= 0; end = eventEnd(bytes, start)) {
      writable = this.relayEvent(bytes.subarray(start, end)) && writable;
      start = end;
    }
    this.partial = start < bytes.length ? Buffer.from(bytes.subarray(start)) : undefined;
    return writable;
  }

  on(event: 'drain', listener: () => void): this {
    this.res.on(event, listener);
    return this;
  }

  off(event: 'drain', listener: () => void): this {
    this.res.off(event, listener);
    return this;
  }

  /** The text delivered to the client so far. */
  deliveredText(): string {
    return this.texts.join('');
  }

  /** Content events the client got: about as many tokens. */
  get deliveredEvents(): number {
    return this.contentEvents;
  }

  /** Plain text so far and not finished: another candidate may continue it. */
  get resumable(): boolean {
    return this.plain && !this.toolCall && !this.finished;
  }

  /**
   * The upstream broke off: what it left of an unfinished event is dropped (the client never
   * saw it), and what comes next is a continuation to relay as the same answer.
   */
  continueHere(): void {
    this.partial = undefined;
    this.continuing = true;
  }

  private relayEvent(event: Buffer): boolean {
    const data = dataOf(event.toString('utf8'));
    if (data === undefined) return this.res.write(event);
    if (data === '[DONE]') {
      this.finished = true;
      return this.res.write(event);
    }
    let chunk: Chunk;
    try {
      chunk = JSON.parse(data) as Chunk;
    } catch {
      // Not JSON: relayed as it is, but nothing can tell what it said.
      this.plain = false;
      return this.res.write(event);
    }
    this.read(chunk);
    if (!this.continuing) return this.res.write(event);
    const rewritten = this.asSameAnswer(chunk);
    return rewritten === undefined ? true : this.res.write(`data: ${JSON.stringify(rewritten)}\n\n`);
  }

  /** Takes from one chunk what decides a resume: its text, a tool call, other choices, the end. */
  private read(chunk: Chunk): void {
    if (this.id === undefined) {
      this.id = chunk.id;
      this.model = chunk.model;
      this.created = chunk.created;
    }
    const choices = Array.isArray(chunk.choices) ? chunk.choices : [];
    if (choices.length > 1) this.plain = false;
    const choice = choices[0];
    if (choice === undefined) return;
    if (choice.index !== undefined && choice.index !== 0) this.plain = false;
    const delta = choice.delta;
    if (delta !== undefined && (delta.tool_calls !== undefined || delta.function_call !== undefined)) this.toolCall = true;
    const text = this.kind === 'chat' ? delta?.content : choice.text;
    if (typeof text === 'string' && text !== '') {
      this.texts.push(text);
      this.contentEvents++;
    }
    if (choice.finish_reason !== undefined && choice.finish_reason !== null) this.finished = true;
  }

  /** A continuation's chunk as a chunk of the answer the client already reads; undefined for its role-only first chunk. */
  private asSameAnswer(chunk: Chunk): Chunk | undefined {
    const choice = Array.isArray(chunk.choices) ? chunk.choices[0] : undefined;
    if (choice?.delta !== undefined && 'role' in choice.delta) {
      const { role: _role, ...rest } = choice.delta;
      const saysNothing = Object.keys(rest).every((key) => key === 'content' && (rest.content === '' || rest.content === null));
      if (saysNothing && (choice.finish_reason === undefined || choice.finish_reason === null) && chunk.choices!.length === 1) return undefined;
      choice.delta = rest;
    }
    return { ...chunk, id: this.id, model: this.model, created: this.created };
  }
}
