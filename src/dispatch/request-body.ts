/** How a model is written where the client's was: a JSON string literal, or a form field's value as it is. */
export type ModelEncoding = 'json' | 'form';

/**
 * A client's body, kept as received, with the one rewrite dispatch makes: the `model` each
 * candidate gets, spliced in where the client's was (a JSON literal, or a multipart field's
 * value). Every other byte goes upstream as the client sent it, a re-sent upload included, and
 * no parsed document is kept alive for the dispatch.
 *
 * The body was read by the request scanner or the multipart scanner, which refuse a body with
 * more than one `model` in any spelling: so the splice leaves exactly one, the candidate's.
 */
export class RequestBody {
  constructor(
    readonly raw: Buffer,
    /** The client's `model`, decoded. */
    private readonly model: string,
    /** Where it sits in `raw`: [start, end) of its JSON literal (quotes included) or of the field's value. */
    private readonly span: readonly [number, number],
    private readonly encoding: ModelEncoding = 'json',
  ) {}

  /** The body as the candidate serving `model` gets it. */
  withModel(model: string): Buffer {
    if (model === this.model) return this.raw;
    const [start, end] = this.span;
    const literal = this.encoding === 'json' ? JSON.stringify(model) : formValue(model);
    const length = start + Buffer.byteLength(literal) + (this.raw.length - end);
    const out = Buffer.allocUnsafe(length);
    this.raw.copy(out, 0, 0, start);
    const written = out.write(literal, start);
    this.raw.copy(out, start + written, end);
    return out;
  }
}

/** A model as a form field's value: a line end in it would end the part (candidate names come from the config; this is the guard). */
function formValue(model: string): string {
  if (/[\r\n]/.test(model)) throw new Error(`a model name with a line end cannot go in a form field: ${JSON.stringify(model)}`);
  return model;
}
