import { InvalidRequestError } from '../errors.js';

/** What dispatch reads of a `multipart/form-data` body: its `model` field, and where its value sits. */
export interface MultipartFields {
  readonly model: string;
  /** The `model` field's value in the raw bytes: [start, end). */
  readonly modelSpan: readonly [number, number];
}

/** A part's headers longer than this are refused: a form field's are a line or two. */
const maxPartHeaderBytes = 8 * 1024;

/** RFC 2046's boundary characters, 1 to 70 of them, not ending in a space. */
const boundaryPattern = /^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$/;

const headersEnd = Buffer.from('\r\n\r\n');

function invalidForm(detail: string): InvalidRequestError {
  return new InvalidRequestError(`request body is not valid multipart/form-data: ${detail}`, null, 'invalid_multipart');
}

/**
 * The boundary of a `multipart/form-data` Content-Type; undefined when the type is another, or
 * its boundary missing or not one RFC 2046 allows (the body would then mean nothing for certain).
 */
export function multipartBoundary(contentType: string | undefined): string | undefined {
  if (contentType === undefined) return undefined;
  const [type, ...parameters] = contentType.split(';');
  if (type?.trim().toLowerCase() !== 'multipart/form-data') return undefined;
  let boundary: string | undefined;
  for (const parameter of parameters) {
    const at = parameter.indexOf('=');
    if (at < 0 || parameter.slice(0, at).trim().toLowerCase() !== 'boundary') continue;
    if (boundary !== undefined) return undefined;
    const value = parameter.slice(at + 1).trim();
    boundary = value.length >= 2 && value.startsWith('"') && value.endsWith('"') ? value.slice(1, -1) : value;
  }
  return boundary !== undefined && boundaryPattern.test(boundary) ? boundary : undefined;
}

/**
 * Where the next delimiter line starts at or after `from`: the boundary after a line end,
 * followed by a line end or `--`. The same bytes followed by anything else are content, as every
 * form parser reads them.
 */
function nextDelimiterAt(raw: Buffer, delimiter: Buffer, from: number): number {
  for (let at = raw.indexOf(delimiter, from); at >= 0; at = raw.indexOf(delimiter, at + 1)) {
    const after = at + delimiter.length;
    if ((raw[after] === 0x0d && raw[after + 1] === 0x0a) || (raw[after] === 0x2d && raw[after + 1] === 0x2d)) return at;
  }
  return -1;
}

/** The `name` of a part from its headers; undefined for a part with no form-data disposition. */
function fieldName(headers: string): string | undefined {
  for (const line of headers.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon < 0 || line.slice(0, colon).trim().toLowerCase() !== 'content-disposition') continue;
    const match = /;\s*name\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))/i.exec(line.slice(colon + 1));
    if (!match) return undefined;
    return match[1] !== undefined ? match[1].replace(/\\(.)/g, '$1') : match[2];
  }
  return undefined;
}

/**
 * Finds the `model` field of a `multipart/form-data` body by its delimiters alone, at a cost
 * linear in the body: the file parts are never decoded, so a re-sent upload is byte for byte the
 * client's but for `model`. As with JSON, one body has one meaning: a form with two `model`
 * fields (in any case: some servers match field names without it) is refused.
 * @throws InvalidRequestError when the form is malformed, or `model` missing, repeated or not printable.
 */
export function scanMultipart(raw: Buffer, boundary: string): MultipartFields {
  const delimiter = Buffer.from(`--${boundary}`);
  const nextDelimiter = Buffer.from(`\r\n--${boundary}`);
  // The first delimiter may follow a preamble (ended by a line end); every later one starts a line.
  let at = raw.indexOf(delimiter);
  if (at < 0 || (at > 0 && (raw[at - 2] !== 0x0d || raw[at - 1] !== 0x0a))) throw invalidForm('no opening boundary');
  let model: MultipartFields | undefined;
  let modelFields = 0;
  for (;;) {
    const afterDelimiter = at + delimiter.length;
    if (raw[afterDelimiter] === 0x2d && raw[afterDelimiter + 1] === 0x2d) break;
    if (raw[afterDelimiter] !== 0x0d || raw[afterDelimiter + 1] !== 0x0a) throw invalidForm('a boundary is not followed by a line end');
    // The line end after the delimiter may be the first half of the blank line (a part with no headers).
    const headersStop = raw.indexOf(headersEnd, afterDelimiter);
    if (headersStop < 0 || headersStop - afterDelimiter > maxPartHeaderBytes) throw invalidForm('a part has no end to its headers');
    const headersStart = Math.min(afterDelimiter + 2, headersStop);
    const contentStart = headersStop + 4;
    const next = nextDelimiterAt(raw, nextDelimiter, contentStart);
    if (next < 0) throw invalidForm('a part is not closed by a boundary');
    const name = fieldName(raw.toString('latin1', headersStart, headersStop));
    if (name !== undefined && name.toLowerCase() === 'model') {
      modelFields++;
      if (name === 'model') model = { model: raw.toString('utf8', contentStart, next), modelSpan: [contentStart, next] };
    }
    at = next + 2;
  }
  if (modelFields > 1) throw new InvalidRequestError('model: the form has more than one "model" field; send exactly one', 'model', 'duplicate_model_key');
  const fail = (message: string) => new InvalidRequestError(`model: ${message}`, 'model', 'missing_model');
  if (model === undefined) throw fail('is required as a form field');
  if (model.model.length === 0) throw fail('must not be empty');
  if (model.model.length > 256) throw fail('is longer than 256 characters');
  if (/[\u0000-\u001f\u007f]/.test(model.model)) throw fail('must not contain control characters');
  return model;
}
