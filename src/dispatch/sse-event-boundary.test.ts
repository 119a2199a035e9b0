import { createParser, type EventSourceMessage } from 'eventsource-parser';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { sseEventBoundary } from './failover.js';

/** The events an SSE parser reads from `text`, in order. */
function eventsOf(text: string): string[] {
  const events: string[] = [];
  const parser = createParser({ onEvent: (event: EventSourceMessage) => events.push(event.data) });
  parser.feed(text);
  return events;
}

describe('sseEventBoundary', () => {
  it.each([
    ['after a whole event', 'data: a\n\n', ''],
    ['after a whole event with CRLF', 'data: a\r\n\r\n', ''],
    ['after a whole event with CR', 'data: a\r\r', ''],
    ['after a complete line', 'data: a\n', '\n'],
    ['after a complete CRLF line', 'data: a\r\n', '\n'],
    ['after a lone CR', 'data: a\r', '\n\n'],
    ['in the middle of a line', 'data: {"choi', '\n\n'],
    ['at the start of the stream', '', ''],
  ])('%s writes %j', (_name, stream, expected) => {
    expect(sseEventBoundary(stream === '' ? undefined : Buffer.from(stream), undefined)).toBe(expected);
  });

  it('looks across the chunk before the last', () => {
    expect(sseEventBoundary(Buffer.from('\n'), Buffer.from('data: a\n'))).toBe('');
    expect(sseEventBoundary(Buffer.from('\n'), Buffer.from('data: a\r'))).toBe('\n');
  });

  it('always leaves our error event readable as an event of its own, however the stream broke off', () => {
    const piece = fc.constantFrom('data: ', '{"x":1}', '\n', '\r', '\r\n', 'event: e', ': comment', 'id: 3');
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 12 }), fc.nat(), (pieces, split) => {
        const stream = pieces.join('');
        const at = stream.length === 0 ? 0 : split % stream.length;
        const last = Buffer.from(stream.slice(at));
        const previous = Buffer.from(stream.slice(0, at));
        const ours = 'data: {"error":{"code":"stream_error"}}\n\n';
        const boundary = sseEventBoundary(last.length > 0 ? last : undefined, last.length > 0 ? previous : undefined);
        const events = eventsOf(stream + boundary + ours);
        expect(events.at(-1)).toBe('{"error":{"code":"stream_error"}}');
      }),
      { numRuns: 2_000 },
    );
  });
});
