/**
 * A client's JSON body, kept as received, with the one rewrite dispatch makes: the `model` each
 * candidate gets, spliced in where the client's `model` literal was. Every other byte goes
 * upstream as the client sent it, and no parsed document is kept alive for the dispatch.
 *
 * The body was read by the request scanner, which refuses a body with more than one top-level
 * `model` key in any spelling: so the splice leaves exactly one, the candidate's.
 */
export class RequestBody {
  constructor(
    readonly raw: Buffer,
    /** The client's `model`, decoded. */
    private readonly model: string,
    /** Where its string literal sits in `raw`, quotes included: [start, end). */
    private readonly span: readonly [number, number],
  ) {}

  /** The body as the candidate serving `model` gets it. */
  withModel(model: string): Buffer {
    if (model === this.model) return this.raw;
    const [start, end] = this.span;
    const literal = JSON.stringify(model);
    const length = start + Buffer.byteLength(literal) + (this.raw.length - end);
    const out = Buffer.allocUnsafe(length);
    this.raw.copy(out, 0, 0, start);
    const written = out.write(literal, start);
    this.raw.copy(out, start + written, end);
    return out;
  }
}
