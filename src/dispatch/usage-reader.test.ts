import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { UsageReader } from './usage-reader.js';

function read(stream: boolean, ...chunks: string[]) {
  const reader = new UsageReader(stream);
  for (const chunk of chunks) reader.push(Buffer.from(chunk));
  return reader.read();
}

describe('UsageReader on JSON answers', () => {
  it('reads the top-level usage', () => {
    const body = JSON.stringify({ id: 'x', choices: [{ message: { content: 'hi' } }], usage: { prompt_tokens: 12, completion_tokens: 3, total_tokens: 15 } });
    expect(read(false, body.slice(0, 20), body.slice(20))).toEqual({ promptTokens: 12, completionTokens: 3 });
  });

  it('ignores a nested "usage" key that comes after the top-level one', () => {
    const body = '{"usage":{"prompt_tokens":5,"completion_tokens":6},"meta":{"usage":{"prompt_tokens":99,"completion_tokens":99}}}';
    expect(read(false, body)).toEqual({ promptTokens: 5, completionTokens: 6 });
  });

  it('is not fooled by "usage" inside a string, escaped quotes or brackets in strings', () => {
    const body = JSON.stringify({
      choices: [{ message: { content: 'the "usage": {"prompt_tokens": 1} } ] \\ [ {' } }],
      usage: { prompt_tokens: 7, completion_tokens: 8, prompt_tokens_details: { cached_tokens: 2 } },
      tail: 'a "usage" \\"',
    });
    expect(read(false, body)).toEqual({ promptTokens: 7, completionTokens: 8 });
  });

  it('answers nulls for no usage, a null usage, and a body that is not JSON', () => {
    expect(read(false, '{"choices":[]}')).toEqual({ promptTokens: null, completionTokens: null });
    expect(read(false, '{"usage":null}')).toEqual({ promptTokens: null, completionTokens: null });
    expect(read(false, 'upstream says "usage": {"prompt_tokens": 1')).toEqual({ promptTokens: null, completionTokens: null });
  });

  it('reads the same usage as parsing the whole document, for any document', () => {
    const usage = fc.record({ prompt_tokens: fc.nat(), completion_tokens: fc.nat() });
    fc.assert(
      fc.property(fc.jsonValue(), fc.option(usage), fc.jsonValue(), (before, top, after) => {
        const document: Record<string, unknown> = { before, nested: { usage: { prompt_tokens: 1, completion_tokens: 1 } } };
        if (top) document.usage = top;
        document.after = after;
        const expected = top ? { promptTokens: top.prompt_tokens, completionTokens: top.completion_tokens } : { promptTokens: null, completionTokens: null };
        expect(read(false, JSON.stringify(document))).toEqual(expected);
        expect(read(false, JSON.stringify(document, null, 2))).toEqual(expected);
      }),
      { numRuns: 300 },
    );
  });
});

describe('UsageReader on the usage object itself', () => {
  const tokenCount = fc.oneof(fc.nat(), fc.integer({ min: -5, max: -1 }), fc.double(), fc.constant(2 ** 60), fc.string(), fc.constant(null));
  const usageObject = fc.dictionary(
    fc.oneof(fc.constantFrom('prompt_tokens', 'completion_tokens', 'total_tokens', 'prompt_tokens_details', 'prompt_\\u0074okens'), fc.string()),
    fc.oneof(tokenCount, fc.jsonValue()),
  );

  it('reads what parsing the object gives, whatever its keys, values, spacing and repeats', () => {
    fc.assert(
      fc.property(usageObject, fc.boolean(), fc.nat(3), (usage, pretty, repeats) => {
        let text = JSON.stringify({ id: 'x', usage }, null, pretty ? 2 : undefined);
        // Earlier top-level usage keys: JSON.parse keeps the last.
        if (repeats > 0) text = text.replace('"usage":', `"usage": ${'{"prompt_tokens": 1}, "usage":'.repeat(repeats)}`);
        const parsed = (JSON.parse(text) as { usage: Record<string, unknown> }).usage;
        const count = (value: unknown) => (typeof value === 'number' && Number.isInteger(value) && value >= 0 ? value : null);
        expect(read(false, text)).toEqual({ promptTokens: count(parsed.prompt_tokens), completionTokens: count(parsed.completion_tokens) });
      }),
      { numRuns: 500 },
    );
  });

  it('parses nothing to read a flat object of counts', () => {
    const parse = vi.spyOn(JSON, 'parse');
    try {
      expect(read(false, '{"id":"x","usage":{"prompt_tokens":210,"completion_tokens":40,"total_tokens":250}}')).toEqual({
        promptTokens: 210,
        completionTokens: 40,
      });
      expect(parse).not.toHaveBeenCalled();
    } finally {
      parse.mockRestore();
    }
  });

  it('reads a flat object byte by byte, and leaves anything unusual to the parser', () => {
    expect(read(false, '{"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}')).toEqual({ promptTokens: 12, completionTokens: 3 });
    expect(read(false, '{"usage": { "completion_tokens" : 0 , "prompt_tokens" : 7 } }')).toEqual({ promptTokens: 7, completionTokens: 0 });
    expect(read(false, '{"usage":{}}')).toEqual({ promptTokens: null, completionTokens: null });
    expect(read(false, '{"usage":{"prompt_tokens":1.5,"completion_tokens":2e1}}')).toEqual({ promptTokens: null, completionTokens: 20 });
    expect(read(false, '{"usage":{"prompt_\\u0074okens":4,"completion_tokens":-1}}')).toEqual({ promptTokens: 4, completionTokens: null });
    expect(read(false, '{"usage":{"prompt_tokens":012}}')).toEqual({ promptTokens: null, completionTokens: null });
    expect(read(false, '{"usage":{"prompt_tokens":1,}}')).toEqual({ promptTokens: null, completionTokens: null });
  });
});

describe('UsageReader on SSE streams', () => {
  const chunk = (content: string) => `data: ${JSON.stringify({ choices: [{ delta: { content } }], usage: null })}\n\n`;
  const usageEvent = `data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 30, completion_tokens: 4 } })}\n\n`;

  it('reads the usage of the last event that carries one', () => {
    expect(read(true, chunk('a'), chunk('b'), usageEvent, 'data: [DONE]\n\n')).toEqual({ promptTokens: 30, completionTokens: 4 });
  });

  it('keeps the last non-null usage when later events say null', () => {
    expect(read(true, usageEvent, chunk('late'), 'data: [DONE]\n\n')).toEqual({ promptTokens: 30, completionTokens: 4 });
  });

  it('reads a usage event that arrived split over two chunks', () => {
    for (const cut of [3, 20, usageEvent.length - 3]) {
      expect(read(true, chunk('a'), usageEvent.slice(0, cut), usageEvent.slice(cut), 'data: [DONE]\n\n')).toEqual({ promptTokens: 30, completionTokens: 4 });
      expect(read(true, chunk('a'), usageEvent.slice(0, cut), `${usageEvent.slice(cut)}data: [DONE]\n\n`)).toEqual({ promptTokens: 30, completionTokens: 4 });
    }
  });

  it('finds a "usage" key cut between two chunks at any byte', () => {
    const keyAt = usageEvent.indexOf('"usage"');
    for (let cut = keyAt + 1; cut < keyAt + '"usage"'.length; cut++) {
      expect(read(true, chunk('a'), chunk('b'), usageEvent.slice(0, cut), usageEvent.slice(cut), 'data: [DONE]\n\n')).toEqual({
        promptTokens: 30,
        completionTokens: 4,
      });
    }
  });

  it('reads an event whose data spans several lines', () => {
    const split = 'data: {"choices":[],\ndata: "usage":{"prompt_tokens":9,"completion_tokens":2}}\n\n';
    expect(read(true, chunk('a'), split, 'data: [DONE]\n\n')).toEqual({ promptTokens: 9, completionTokens: 2 });
  });

  it('finds the usage at the end of a stream longer than its window', () => {
    const chunks = Array.from({ length: 2_000 }, (_, i) => chunk(`token ${i}`));
    expect(read(true, ...chunks, usageEvent, 'data: [DONE]\n\n')).toEqual({ promptTokens: 30, completionTokens: 4 });
  });

  it('reads a usage event with multi-byte text cut inside a character', () => {
    const event = Buffer.from(`data: ${JSON.stringify({ model: 'modèle ✓ 模型', choices: [], usage: { prompt_tokens: 11, completion_tokens: 5 } })}\n\n`);
    const inside = event.indexOf(Buffer.from('✓')) + 1;
    const reader = new UsageReader(true);
    for (const part of [Buffer.from(chunk('héllo 🙂')), event.subarray(0, inside), event.subarray(inside), Buffer.from('data: [DONE]\n\n')]) reader.push(part);
    expect(reader.read()).toEqual({ promptTokens: 11, completionTokens: 5 });
  });

  it('answers nulls when no event carries a usage', () => {
    expect(read(true, chunk('a'), 'data: [DONE]\n\n')).toEqual({ promptTokens: null, completionTokens: null });
  });
});

describe('UsageReader memory', () => {
  it("keeps its own copy of a stream's chunks, not the read buffers they arrived in", () => {
    const reader = new UsageReader(true);
    const readBuffer = Buffer.from('data: {"usage":{"prompt_tokens":4,"completion_tokens":2}}\n\ndata: [DONE]\n\n');
    reader.push(readBuffer);
    // The socket's buffer is reused or freed once the chunk is relayed: the window must not see it.
    readBuffer.fill(0x20);
    expect(reader.read()).toEqual({ promptTokens: 4, completionTokens: 2 });
  });
});

describe('UsageReader in the other protocols', () => {
  const readAs = (format: 'responses' | 'anthropic' | 'llama' | 'none', stream: boolean, ...chunks: string[]) => {
    const reader = new UsageReader(stream, format);
    for (const chunk of chunks) reader.push(Buffer.from(chunk));
    return reader.read();
  };

  it('reads the Responses API usage of a JSON answer and of response.completed', () => {
    expect(readAs('responses', false, '{"id":"r","usage":{"input_tokens":5,"output_tokens":9,"total_tokens":14}}')).toEqual({
      promptTokens: 5,
      completionTokens: 9,
    });
    const completed = `event: response.completed\ndata: {"type":"response.completed","response":{"output":[{"content":[{"text":"${'x'.repeat(40_000)}"}]}],"usage":{"input_tokens":5,"output_tokens":9}}}\n\n`;
    // A completed event longer than the tail window is found by its counts at its end.
    const events = [
      'event: response.created\ndata: {"type":"response.created","response":{"usage":null}}\n\n',
      completed.slice(0, 20_000),
      completed.slice(20_000),
    ];
    expect(readAs('responses', true, ...events)).toEqual({ promptTokens: 5, completionTokens: 9 });
  });

  it('reads Anthropic input tokens from message_start and output tokens from the last message_delta', () => {
    const start = 'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":12,"output_tokens":1}}}\n\n';
    const deltas = Array.from(
      { length: 40 },
      (_, i) => `event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"type":"text_delta","text":"${'w'.repeat(500)} ${i}"}}\n\n`,
    );
    const end = 'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":41}}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n';
    expect(readAs('anthropic', true, start, ...deltas, end)).toEqual({ promptTokens: 12, completionTokens: 41 });
    expect(readAs('anthropic', false, '{"type":"message","usage":{"input_tokens":3,"output_tokens":4}}')).toEqual({ promptTokens: 3, completionTokens: 4 });
    expect(readAs('anthropic', false, '{"input_tokens":17}')).toEqual({ promptTokens: 17, completionTokens: null });
  });

  it("reads llama.cpp's tokens_evaluated and tokens_predicted, and not counts quoted inside a text", () => {
    const text = 'data: {"content":"the field \\"tokens_predicted\\": 999 is mine","stop":false}\n\n';
    expect(readAs('llama', true, text, 'data: {"content":"","stop":true,"tokens_evaluated":8,"tokens_predicted":3}\n\n')).toEqual({
      promptTokens: 8,
      completionTokens: 3,
    });
    expect(readAs('llama', true, text)).toEqual({ promptTokens: null, completionTokens: null });
    expect(readAs('llama', false, '{"content":"x","tokens_evaluated":8,"tokens_predicted":3}')).toEqual({ promptTokens: 8, completionTokens: 3 });
  });

  it('reads nothing of an answer without usage (audio, images)', () => {
    expect(readAs('none', false, 'ID3\u0004binary')).toEqual({ promptTokens: null, completionTokens: null });
  });
});
