import type { ProviderConfig } from '../config/load.js';

/**
 * The request that asks `provider` to continue an answer another candidate began, from the
 * client's body (`raw`) and the text the client already has; undefined when this provider cannot
 * be asked (a chat answer on a provider whose `continuation` is `none`, a completions prompt
 * that is not one string).
 *
 * - Chat: the messages end with `{"role":"assistant","content":<text so far>}`, which llama.cpp's
 *   server continues as a prefill; vLLM and SGLang need `continue_final_message: true` and
 *   `add_generation_prompt: false` to do the same.
 * - Completions: the prompt followed by the text so far, and `max_tokens` reduced by what was
 *   delivered (one token an event, about what servers send), at least 1.
 *
 * The body is parsed and written again: a rare path (a stream broke), so the cost is no matter,
 * and the request scanner has already refused any body whose keys could be read two ways.
 */
export function continuationBody(
  raw: Buffer,
  kind: 'chat' | 'completions',
  provider: ProviderConfig,
  model: string,
  delivered: { text: string; events: number },
): Buffer | undefined {
  const document = JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
  document.model = model;
  if (kind === 'chat') {
    if (provider.continuation === 'none' || !Array.isArray(document.messages)) return undefined;
    document.messages = [...(document.messages as unknown[]), { role: 'assistant', content: delivered.text }];
    if (provider.continuation === 'continue_final_message') {
      document.continue_final_message = true;
      document.add_generation_prompt = false;
    }
  } else {
    if (typeof document.prompt !== 'string') return undefined;
    document.prompt = document.prompt + delivered.text;
    if (typeof document.max_tokens === 'number') document.max_tokens = Math.max(1, document.max_tokens - delivered.events);
  }
  return Buffer.from(JSON.stringify(document));
}
