import { describe, expect, it } from 'vitest';
import { type InvalidRequestError } from '../errors.js';
import { multipartBoundary, scanMultipart } from './multipart-body.js';
import { RequestBody } from './request-body.js';

const part = (name: string, value: string, extra = '') => `--b0und\r\ncontent-disposition: form-data; name="${name}"${extra}\r\n\r\n${value}\r\n`;
const form = (...parts: string[]) => Buffer.from(`${parts.join('')}--b0und--\r\n`, 'latin1');

function codeOf(raw: Buffer): string | undefined {
  try {
    scanMultipart(raw, 'b0und');
    return undefined;
  } catch (err: unknown) {
    return (err as InvalidRequestError).code;
  }
}

describe('multipartBoundary', () => {
  it.each([
    ['multipart/form-data; boundary=abc', 'abc'],
    ['Multipart/Form-Data;boundary="a b:c"', 'a b:c'],
    ['multipart/form-data; charset=utf-8; boundary=----x', '----x'],
  ])('reads the boundary of %s', (type, boundary) => {
    expect(multipartBoundary(type)).toBe(boundary);
  });

  it.each([
    undefined,
    'application/json',
    'multipart/form-data',
    'multipart/form-data; boundary=',
    `multipart/form-data; boundary=${'x'.repeat(71)}`,
    'multipart/form-data; boundary=a; boundary=b',
  ])('refuses %s', (type) => {
    expect(multipartBoundary(type)).toBeUndefined();
  });
});

describe('scanMultipart', () => {
  it('finds the model field among file parts without reading the files', () => {
    const file = '\u0000\u00ff--b0un\r\nd\r\n--b0undX'.repeat(50);
    const raw = form(part('file', file, '; filename="a.wav"\r\ncontent-type: audio/wav'), part('model', 'auto:chat'), part('language', 'en'));
    const fields = scanMultipart(raw, 'b0und');
    expect(fields.model).toBe('auto:chat');
    expect(raw.toString('latin1', ...fields.modelSpan)).toBe('auto:chat');
    const rewritten = new RequestBody(raw, fields.model, fields.modelSpan, 'form').withModel('qwen/7b:q4');
    expect(rewritten.toString('latin1')).toBe(raw.toString('latin1').replace('\r\n\r\nauto:chat\r\n', '\r\n\r\nqwen/7b:q4\r\n'));
  });

  it('reads a form after a preamble, and a part with no headers', () => {
    expect(scanMultipart(Buffer.from(`preamble\r\n${part('model', 'm')}--b0und\r\n\r\nno headers\r\n--b0und--\r\n`), 'b0und').model).toBe('m');
  });

  it.each([
    ['two model fields', form(part('model', 'a'), part('model', 'b')), 'duplicate_model_key'],
    ['a model field in another case', form(part('model', 'a'), part('MODEL', 'b')), 'duplicate_model_key'],
    ['no model field', form(part('file', 'x')), 'missing_model'],
    ['an empty model', form(part('model', '')), 'missing_model'],
    ['a model with a control character', form(part('model', 'a\u0001b')), 'missing_model'],
    ['no boundary at all', Buffer.from('model=auto:chat'), 'invalid_multipart'],
    ['a part never closed', Buffer.from('--b0und\r\ncontent-disposition: form-data; name="model"\r\n\r\nauto:chat'), 'invalid_multipart'],
    ['headers never ended', Buffer.from('--b0und\r\ncontent-disposition: form-data; name="model"\r\nauto:chat\r\n--b0und--'), 'invalid_multipart'],
  ])('refuses %s', (_name, raw, code) => {
    expect(codeOf(raw)).toBe(code);
  });

  it('refuses to write a model with a line end into a form field', () => {
    const raw = form(part('model', 'a'));
    const fields = scanMultipart(raw, 'b0und');
    expect(() => new RequestBody(raw, fields.model, fields.modelSpan, 'form').withModel('x\r\n--b0und')).toThrow(/line end/);
  });
});
