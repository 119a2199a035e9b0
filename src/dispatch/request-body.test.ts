import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { locateModel, RequestBody } from './request-body.js';

const bodyOf = (text: string) => {
  const document = JSON.parse(text) as Record<string, unknown>;
  return new RequestBody(Buffer.from(text), document, document.model as string);
};

describe('RequestBody.withModel', () => {
  it('splices the candidate model into the raw bytes and leaves every other byte as sent', () => {
    const text = '{ "messages" : [{"role":"user","content":"hi \\"model\\": x"}],\n "model" :  "auto:chat", "stream":true }';
    const out = bodyOf(text).withModel('qwen2.5-7b/instruct');
    expect(out.toString()).toBe(text.replace('"auto:chat"', '"qwen2.5-7b/instruct"'));
  });

  it('returns the raw body itself when the candidate model is the one requested', () => {
    const body = bodyOf('{"model":"llama","messages":[]}');
    expect(body.withModel('llama')).toBe(body.raw);
  });

  it('escapes a model that needs it', () => {
    expect(JSON.parse(bodyOf('{"model":"a"}').withModel('b"\\c\u00e9').toString()).model).toBe('b"\\c\u00e9');
  });

  it.each([
    ['a nested model key', '{"model":"a","tools":[{"model":"a"}]}'],
    ['a duplicate top-level key', '{"model":"b","model":"a"}'],
    ['"model" as a value', '{"model":"a","tags":["model"]}'],
    ['an escaped top-level key', '{"mod\\u0065l":"a","x":{"model":"a"}}'],
    ['an escaped model value', '{"model":"\\u0061"}'],
  ])('falls back to serialising the document for %s', (_name, text) => {
    const body = bodyOf(text);
    const out = JSON.parse(body.withModel('z').toString()) as Record<string, unknown>;
    expect(out).toEqual({ ...(JSON.parse(text) as object), model: 'z' });
  });

  it('finds the model only where it is certain', () => {
    expect(locateModel(Buffer.from('{"x":{"model":"a"}}'), 'a')).toBeUndefined();
    expect(locateModel(Buffer.from('{"x":"\\"model\\":1","model":"a"}'), 'a')).toEqual([27, 30]);
  });

  it('always yields the document with only model replaced', () => {
    const key = fc.oneof(fc.constantFrom('model', 'messages', 'stream', 'x'), fc.string({ maxLength: 8 }));
    const value = fc.jsonValue({ maxDepth: 3 });
    fc.assert(
      fc.property(
        fc.dictionary(key, value, { maxKeys: 6 }),
        fc.string({ minLength: 1, maxLength: 20 }),
        fc.string({ minLength: 1, maxLength: 20 }),
        fc.boolean(),
        (rest, requested, candidate, pretty) => {
          const document = { ...rest, model: requested };
          const text = pretty ? JSON.stringify(document, null, 2) : JSON.stringify(document);
          const parsed = JSON.parse(text) as Record<string, unknown>;
          const out = new RequestBody(Buffer.from(text), parsed, requested).withModel(candidate);
          expect(JSON.parse(out.toString())).toEqual({ ...parsed, model: candidate });
        },
      ),
      { numRuns: 500 },
    );
  });
});
