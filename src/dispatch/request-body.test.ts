import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { topLevelMembers } from '../../test/support/json-members.js';
import { RequestBody } from './request-body.js';
import { scanRequest } from './request-scanner.js';

const limits = { maxJsonDepth: 64 };

const bodyOf = (text: string) => {
  const raw = Buffer.from(text);
  const fields = scanRequest(raw, limits);
  return new RequestBody(raw, fields.model, fields.modelSpan);
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
    ['a nested model key', '{"model":"a","tools":[{"model":"a"}]}', '{"model":"z","tools":[{"model":"a"}]}'],
    ['"model" as a value', '{"model":"a","tags":["model"]}', '{"model":"z","tags":["model"]}'],
    ['an escaped model value', '{"model":"\\u0061"}', '{"model":"z"}'],
  ])('rewrites only the top-level model for %s', (_name, text, expected) => {
    expect(bodyOf(text).withModel('z').toString()).toBe(expected);
  });

  it("gives the upstream exactly one model, the candidate's, read first-key or last-key, for any object JSON.parse accepts", () => {
    const modelKey = fc.constantFrom('model', 'mod\\u0065l', '\\u006dodel', 'Model', 'MODEL', 'mOdEl');
    const otherKey = fc.constantFrom('messages', 'stream', 'x', 'models', 'model ', 'm\\"odel');
    const key = fc.oneof(modelKey, otherKey);
    const value = fc.oneof(
      fc.string({ maxLength: 8 }).map((s) => JSON.stringify(s)),
      fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v)),
    );
    const member = fc.tuple(key, value).map(([k, v]) => `"${k}":${v}`);
    fc.assert(
      fc.property(fc.array(member, { maxLength: 6 }), fc.string({ minLength: 1, maxLength: 12 }), (members, candidate) => {
        const text = `{${members.join(',')}}`;
        JSON.parse(text); // every generated body is one JSON.parse accepts
        let body: RequestBody;
        try {
          body = bodyOf(text);
        } catch {
          return; // refused with a 400: nothing goes upstream
        }
        const sent = body.withModel(candidate).toString();
        const models = topLevelMembers(sent).filter(([name]) => name.toLowerCase() === 'model');
        expect(models).toEqual([['model', candidate]]);
        expect((JSON.parse(sent) as { model: unknown }).model).toBe(candidate);
      }),
      { numRuns: 2_000 },
    );
  });
});
