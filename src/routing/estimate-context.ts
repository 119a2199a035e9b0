/** Characters per token of typical English and code; an estimate, erring on the large side. */
const charactersPerToken = 3.5;

function textLength(content: unknown): number {
  if (typeof content === 'string') return content.length;
  if (Array.isArray(content)) {
    let length = 0;
    for (const part of content) {
      if (typeof part === 'string') length += part.length;
      else if (part && typeof part === 'object' && typeof (part as { text?: unknown }).text === 'string') {
        length += (part as { text: string }).text.length;
      }
    }
    return length;
  }
  return 0;
}

/**
 * Context a request needs, in tokens: its estimated prompt (messages or prompt) plus the
 * completion it asks for (`max_tokens` / `max_completion_tokens`, 0 when absent).
 */
export function estimateRequiredContext(body: Readonly<Record<string, unknown>>): number {
  let characters = 0;
  if (Array.isArray(body.messages)) {
    for (const message of body.messages) {
      if (message && typeof message === 'object') characters += textLength((message as { content?: unknown }).content) + 8;
    }
  }
  characters += textLength(body.prompt) + textLength(body.input);
  const completion = body.max_completion_tokens ?? body.max_tokens;
  return Math.ceil(characters / charactersPerToken) + (typeof completion === 'number' && completion > 0 ? completion : 0);
}
