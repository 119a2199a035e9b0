import type { ServerResponse } from 'node:http';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ResumableStream } from './resumable-stream.js';

/** A response that keeps what it is sent. */
function fakeResponse() {
  const written: string[] = [];
  const res = { write: (chunk: Buffer | string) => (written.push(chunk.toString()), true), on: () => res, off: () => res };
  return { res: res as unknown as ServerResponse, text: () => written.join('') };
}

const chat = (content: string, extra: Record<string, unknown> = {}) =>
  `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'm1', choices: [{ index: 0, delta: { content }, finish_reason: null }], ...extra })}\n\n`;

describe('ResumableStream', () => {
  it('relays whole events only, however the bytes were cut, and keeps the text they delivered', () => {
    const events = [
      `data: ${JSON.stringify({ id: 'c1', choices: [{ index: 0, delta: { role: 'assistant', content: '' } }] })}\n\n`,
      chat('Hé'),
      ': ping\n\n',
      chat('llo '),
      chat('wörld\u{1f600}'),
    ];
    const stream = events.join('');
    fc.assert(
      fc.property(fc.array(fc.nat(Buffer.byteLength(stream)), { maxLength: 6 }), (cuts) => {
        const bytes = Buffer.from(stream);
        const points = [...new Set(cuts)].sort((x, y) => x - y);
        const { res, text } = fakeResponse();
        const relay = new ResumableStream(res, 'chat');
        let from = 0;
        for (const point of [...points, bytes.length]) {
          relay.write(bytes.subarray(from, point));
          from = point;
          // Never half an event: what went out always ends an event.
          expect(text() === '' || text().endsWith('\n\n')).toBe(true);
        }
        expect(text()).toBe(stream);
        expect(relay.deliveredText()).toBe('Héllo wörld\u{1f600}');
        expect(relay.resumable).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('drops what a broken upstream left of an event, and relays a continuation as the same answer', () => {
    const { res, text } = fakeResponse();
    const relay = new ResumableStream(res, 'chat');
    relay.write(Buffer.from(chat('one ') + chat('tw').slice(0, 20)));
    relay.continueHere();
    const continuation = [
      `data: ${JSON.stringify({ id: 'other', model: 'm2', created: 9, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] })}\n\n`,
      `data: ${JSON.stringify({ id: 'other', model: 'm2', created: 9, choices: [{ index: 0, delta: { content: 'two' }, finish_reason: null }] })}\n\n`,
      'data: [DONE]\n\n',
    ];
    relay.write(Buffer.from(continuation.join('')));
    const events = text().trimEnd().split('\n\n');
    expect(events).toHaveLength(3);
    expect(JSON.parse(events[1]!.slice(6))).toEqual({
      id: 'c1',
      model: 'm1',
      created: 1,
      choices: [{ index: 0, delta: { content: 'two' }, finish_reason: null }],
    });
    expect(events[2]).toBe('data: [DONE]');
    expect(relay.deliveredText()).toBe('one two');
  });

  it.each([
    ['a tool call', `data: ${JSON.stringify({ id: 'c1', choices: [{ index: 0, delta: { tool_calls: [{ index: 0 }] } }] })}\n\n`],
    [
      'two choices',
      `data: ${JSON.stringify({
        id: 'c1',
        choices: [
          { index: 0, delta: { content: 'a' } },
          { index: 1, delta: { content: 'b' } },
        ],
      })}\n\n`,
    ],
    ['a finished answer', `data: ${JSON.stringify({ id: 'c1', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n`],
    ['data that is not JSON', 'data: {not json\n\n'],
  ])('is not resumable after %s', (_name, event) => {
    const relay = new ResumableStream(fakeResponse().res, 'chat');
    relay.write(Buffer.from(chat('x') + event));
    expect(relay.resumable).toBe(false);
  });

  it('reads completions text from choices[].text', () => {
    const relay = new ResumableStream(fakeResponse().res, 'completions');
    relay.write(Buffer.from(`data: ${JSON.stringify({ id: 'k', choices: [{ index: 0, text: 'abc' }] })}\r\n\r\n`));
    expect(relay.deliveredText()).toBe('abc');
    expect(relay.deliveredEvents).toBe(1);
  });
});
