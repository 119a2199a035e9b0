import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { InvalidRequestError } from '../errors.js';
import { scanRequest, scanRequestInSlices, type RequestFields } from './request-scanner.js';

function codeOf(text: string | Buffer, maxJsonDepth = 10_000): string | RequestFields {
  try {
    return scanRequest(Buffer.isBuffer(text) ? text : Buffer.from(text), { maxJsonDepth });
  } catch (err: unknown) {
    if (err instanceof InvalidRequestError) return err.code;
    throw err;
  }
}

/** The estimate from a parsed document: the reference the scanner must match. */
function referenceEstimate(body: Record<string, unknown>): number {
  const textLength = (content: unknown): number => {
    if (typeof content === 'string') return content.length;
    if (!Array.isArray(content)) return 0;
    let length = 0;
    for (const part of content) {
      if (typeof part === 'string') length += part.length;
      else if (part && typeof part === 'object' && typeof (part as { text?: unknown }).text === 'string') length += (part as { text: string }).text.length;
    }
    return length;
  };
  const contentLength = (items: unknown[]): number => {
    let length = 0;
    for (const item of items) if (item && typeof item === 'object' && !Array.isArray(item)) length += textLength((item as { content?: unknown }).content);
    return length;
  };
  let characters = 0;
  if (Array.isArray(body.messages)) {
    characters += contentLength(body.messages);
    for (const message of body.messages) if (message && typeof message === 'object') characters += 8;
  }
  characters += textLength(body.prompt) + textLength(body.input) + textLength(body.system);
  if (Array.isArray(body.input)) characters += contentLength(body.input);
  if (typeof body.instructions === 'string') characters += body.instructions.length;
  const nPredict = typeof body.n_predict === 'number' && Number.isSafeInteger(body.n_predict) ? body.n_predict : undefined;
  const completion = body.max_completion_tokens ?? body.max_tokens ?? body.max_output_tokens ?? nPredict;
  return Math.ceil(characters / 3.5) + (typeof completion === 'number' && completion > 0 ? completion : 0);
}

/** JSON-ish text: the bytes JSON is made of, in any order, so that most of it is almost JSON. */
const almostJson = fc
  .array(
    fc.constantFrom(
      '{',
      '}',
      '[',
      ']',
      ',',
      ':',
      '"',
      '\\',
      'u',
      '0',
      '1',
      '9',
      '-',
      '+',
      '.',
      'e',
      'E',
      ' ',
      '\n',
      '\t',
      'a',
      'true',
      'false',
      'null',
      '"model"',
      '\u0001',
      'é',
      '\u{1f600}',
      '\\u00e9',
      '\\n',
      '\u2028',
    ),
    { maxLength: 40 },
  )
  .map((parts) => parts.join(''));

/** Valid JSON with a random edit (a byte removed, doubled or replaced). */
const editedJson = fc.tuple(fc.jsonValue({ maxDepth: 4 }), fc.nat(), fc.constantFrom('drop', 'double', 'quote', 'brace')).map(([value, at, edit]) => {
  const text = JSON.stringify({ model: 'm', value });
  const i = at % text.length;
  if (edit === 'drop') return text.slice(0, i) + text.slice(i + 1);
  if (edit === 'double') return text.slice(0, i) + text[i] + text.slice(i);
  return text.slice(0, i) + (edit === 'quote' ? '"' : '{') + text.slice(i + 1);
});

describe('scanRequest', () => {
  it('accepts exactly the texts JSON.parse accepts', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          almostJson,
          editedJson,
          fc.json().map((j) => `{"model":"m","x":${j}}`),
        ),
        (text) => {
          let parses = true;
          try {
            JSON.parse(text);
          } catch {
            parses = false;
          }
          const outcome = codeOf(text);
          if (parses) expect(outcome).not.toBe('invalid_json');
          else expect(outcome === 'invalid_json' || outcome === 'invalid_body').toBe(true);
        },
      ),
      { numRuns: 5_000 },
    );
  });

  it('accepts exactly what JSON.parse accepts for raw bytes too (invalid UTF-8 inside and outside strings)', () => {
    for (const bytes of [
      [0x7b, 0x22, 0x6d, 0x22, 0x3a, 0xff, 0x7d],
      [0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d],
      [0xef, 0xbb, 0xbf, 0x7b, 0x7d],
    ]) {
      const raw = Buffer.from(bytes);
      let parses = true;
      try {
        JSON.parse(raw.toString('utf8'));
      } catch {
        parses = false;
      }
      expect(codeOf(raw) !== 'invalid_json').toBe(parses);
    }
  });

  it('reads model, stream and the context estimate as a parse of the same body would', () => {
    const content = fc.oneof(
      fc.string({ unit: 'grapheme', maxLength: 30 }),
      fc.array(
        fc.oneof(
          fc.string({ maxLength: 10 }),
          fc.record({ type: fc.constant('text'), text: fc.string({ unit: 'binary', maxLength: 10 }) }),
          fc.jsonValue({ maxDepth: 1 }),
        ),
        { maxLength: 3 },
      ),
      fc.jsonValue({ maxDepth: 2 }),
    );
    const message = fc.oneof(fc.record({ role: fc.constantFrom('user', 'system'), content }, { requiredKeys: ['role'] }), fc.jsonValue({ maxDepth: 1 }));
    const document = fc.record(
      {
        model: fc.string({ unit: 'binary', minLength: 1, maxLength: 20 }).filter((m) => !/[\u0000-\u001f\u007f]/.test(m)),
        stream: fc.oneof(fc.boolean(), fc.constant(null)),
        messages: fc.array(message, { maxLength: 4 }),
        prompt: content,
        input: fc.oneof(content, fc.array(message, { maxLength: 3 })),
        system: content,
        instructions: fc.oneof(fc.string({ maxLength: 20 }), fc.jsonValue({ maxDepth: 1 })),
        max_output_tokens: fc.oneof(fc.nat(100_000), fc.constant(null)),
        n_predict: fc.oneof(fc.integer({ min: -1, max: 100_000 }), fc.double({ noNaN: true, noDefaultInfinity: true })),
        max_tokens: fc.oneof(fc.nat(100_000), fc.constant(null)),
        max_completion_tokens: fc.oneof(fc.nat(100_000), fc.constant(null)),
        temperature: fc.double({ noNaN: true, noDefaultInfinity: true }),
      },
      { requiredKeys: ['model'] },
    );
    fc.assert(
      fc.property(document, fc.boolean(), (body, pretty) => {
        const text = pretty ? JSON.stringify(body, null, 2) : JSON.stringify(body);
        const fields = codeOf(text) as RequestFields;
        expect(fields.model).toBe(body.model);
        expect(fields.stream).toBe(body.stream === true);
        expect(fields.requiredContext).toBe(referenceEstimate(JSON.parse(text) as Record<string, unknown>));
        expect(JSON.parse(Buffer.from(text).toString('utf8', fields.modelSpan[0], fields.modelSpan[1]))).toBe(body.model);
      }),
      { numRuns: 2_000 },
    );
  });

  it('reads long strings word by word exactly as JSON.parse does, at any alignment and with any byte in them', () => {
    const piece = fc.oneof(
      { weight: 8, arbitrary: fc.string({ minLength: 1, maxLength: 40 }).map((text) => text.replace(/["\\\u0000-\u001f]/g, 'x')) },
      { weight: 1, arbitrary: fc.constantFrom('\\"', '\\\\', '\\n', '\\u00e9', 'é', '\u{1f600}', '\u0001', '"', '\\', '\\x') },
    );
    fc.assert(
      fc.property(fc.array(piece, { minLength: 10, maxLength: 60 }), fc.integer({ min: 0, max: 7 }), (pieces, shift) => {
        const text = `{"model":"m","messages":[{"role":"user","content":"${pieces.join('')}"}]}`;
        // Copied in at an offset, so the string's words start at every alignment.
        const backing = Buffer.alloc(Buffer.byteLength(text) + 8);
        backing.write(text, shift);
        const raw = backing.subarray(shift, shift + Buffer.byteLength(text));
        let parsed: Record<string, unknown> | undefined;
        try {
          parsed = JSON.parse(text) as Record<string, unknown>;
        } catch {
          parsed = undefined;
        }
        const outcome = codeOf(raw);
        if (parsed === undefined) expect(outcome).toBe('invalid_json');
        else expect((outcome as RequestFields).requiredContext).toBe(referenceEstimate(parsed));
      }),
      { numRuns: 3_000 },
    );
  });

  it('gives the same answer read in slices of any size as read at once', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          editedJson,
          fc.json().map((j) => `{"model":"m","x":${j}}`),
        ),
        fc.integer({ min: 1, max: 40 }),
        async (text, slice) => {
          const raw = Buffer.from(text);
          const whole = codeOf(raw);
          let sliced: string | RequestFields;
          try {
            sliced = await scanRequestInSlices(raw, { maxJsonDepth: 10_000 }, slice);
          } catch (err: unknown) {
            sliced = (err as InvalidRequestError).code;
          }
          expect(sliced).toEqual(whole);
        },
      ),
      { numRuns: 1_000 },
    );
  });

  it.each([
    ['a duplicate model key', '{"model":"hidden","model":"auto:chat"}', 'duplicate_model_key'],
    ['an escaped duplicate', '{"mod\\u0065l":"secret","model":"auto:chat"}', 'duplicate_model_key'],
    ['a duplicate in another case', '{"MODEL":"secret","model":"auto:chat"}', 'duplicate_model_key'],
    ['a lone escaped model key', '{"mod\\u0065l":"auto:chat"}', 'escaped_model_key'],
    ['another key twice', '{"model":"a","stream":false,"stream":true}', 'duplicate_key'],
    ['a model in another case only', '{"Model":"a"}', 'missing_model'],
    ['no model', '{"messages":[]}', 'missing_model'],
    ['an empty model', '{"model":""}', 'missing_model'],
    ['a control character in the model', '{"model":"a\\u0000b"}', 'missing_model'],
    ['DEL in the model', '{"model":"a\u007fb"}', 'missing_model'],
    ['DEL in the model of a long body', `{"model":"a\u007fb","x":"${'y'.repeat(300)}"}`, 'missing_model'],
    ['a number as the model', '{"model":1}', 'missing_model'],
    ['a string stream', '{"model":"a","stream":"yes"}', 'invalid_type'],
    ['a negative max_tokens', '{"model":"a","max_tokens":-1}', 'invalid_type'],
    ['a huge max_tokens', '{"model":"a","max_tokens":1e400}', 'invalid_type'],
    ['a fractional max_completion_tokens', '{"model":"a","max_completion_tokens":1.5}', 'invalid_type'],
    ['messages that are not an array', '{"model":"a","messages":{}}', 'invalid_type'],
    ['null messages', '{"model":"a","messages":null}', 'invalid_type'],
    ['an array', '[{"model":"a"}]', 'invalid_body'],
    ['a string', '"model"', 'invalid_body'],
    ['nothing', '', 'invalid_body'],
    ['whitespace', '  ', 'invalid_json'],
    ['a trailing comma', '{"model":"a",}', 'invalid_json'],
    ['two documents', '{"model":"a"}{}', 'invalid_json'],
  ])('refuses %s', (_name, text, code) => {
    expect(codeOf(text, 64)).toBe(code);
  });

  it('accepts nesting up to maxJsonDepth and refuses one level more, without reading the rest', () => {
    const nested = (depth: number, tail = '') => `{"model":"a","x":${'['.repeat(depth - 1)}${']'.repeat(depth - 1)}}${tail}`;
    expect(codeOf(nested(64), 64)).toMatchObject({ model: 'a' });
    expect(codeOf(nested(65), 64)).toBe('json_too_deep');
    // The refusal comes at the 65th level: what follows is never read (here, it is not even JSON).
    expect(codeOf(`{"model":"a","x":${'['.repeat(100)}\u0000garbage`, 64)).toBe('json_too_deep');
  });

  it('reads a 10 MB body of nested arrays in a bounded time', () => {
    const raw = Buffer.from(`{"model":"a","x":${'['.repeat(10 * 1024 * 1024)}`);
    const startedAt = performance.now();
    expect(codeOf(raw, 64)).toBe('json_too_deep');
    expect(performance.now() - startedAt).toBeLessThan(5);
  });
});
