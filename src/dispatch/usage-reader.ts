import { createParser } from 'eventsource-parser';

export interface Usage {
  readonly promptTokens: number | null;
  readonly completionTokens: number | null;
}

const noUsage: Usage = { promptTokens: null, completionTokens: null };

/** Bytes of a stream's end kept to find its usage: the usage chunk is the last before [DONE]. */
const streamTailBytes = 16 * 1024;
/** A JSON answer larger than this is relayed without reading its usage. */
const jsonBodyBytes = 1024 * 1024;

function toCount(value: unknown): number | null {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 ? value : null;
}

function usageOf(document: unknown): Usage | undefined {
  if (typeof document !== 'object' || document === null) return undefined;
  const usage = (document as { usage?: unknown }).usage;
  if (typeof usage !== 'object' || usage === null) return undefined;
  const { prompt_tokens: prompt, completion_tokens: completion } = usage as Record<string, unknown>;
  return { promptTokens: toCount(prompt), completionTokens: toCount(completion) };
}

/**
 * Watches the bytes relayed to the client and reads the token usage the upstream reported: the
 * `usage` of a JSON answer, or of the last SSE event that carries one. Holds a bounded window of
 * the body, never all of a long stream; reads it once, at the end, off the per-chunk path.
 */
export class UsageReader {
  private readonly chunks: Buffer[] = [];
  private bytes = 0;
  private overflowed = false;
  private readonly stream: boolean;

  constructor(stream: boolean) {
    this.stream = stream;
  }

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    if (this.stream) {
      while (this.chunks.length > 1 && this.bytes - this.chunks[0]!.length >= streamTailBytes) {
        this.bytes -= this.chunks.shift()!.length;
        this.overflowed = true;
      }
    } else if (this.bytes > jsonBodyBytes) {
      this.chunks.length = 0;
      this.overflowed = true;
    }
  }

  read(): Usage {
    if (!this.stream) {
      if (this.overflowed) return noUsage;
      try {
        return usageOf(JSON.parse(Buffer.concat(this.chunks).toString('utf8'))) ?? noUsage;
      } catch {
        return noUsage; // not JSON (an upstream that answered text): nothing to read
      }
    }
    let text = Buffer.concat(this.chunks).toString('utf8');
    // A window that starts mid-event begins at the next event boundary.
    if (this.overflowed) text = text.slice(text.indexOf('\n\n') + 2);
    let found: Usage | undefined;
    const parser = createParser({
      onEvent: (event) => {
        if (!event.data.includes('"usage"')) return;
        try {
          found = usageOf(JSON.parse(event.data)) ?? found;
        } catch {
          /* a data line that is not JSON carries no usage */
        }
      },
    });
    parser.feed(text);
    return found ?? noUsage;
  }
}
