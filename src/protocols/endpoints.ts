import type { HttpRoute } from '../metrics/registry.js';

/**
 * How the token usage of an answer is reported: OpenAI's `usage.prompt_tokens` /
 * `completion_tokens`, the Responses API's `usage.input_tokens` / `output_tokens` (in its
 * `response.completed` event when streamed), Anthropic's `input_tokens` / `output_tokens` (split
 * over `message_start` and `message_delta` when streamed), llama.cpp's native `tokens_evaluated` /
 * `tokens_predicted`, or not at all (audio, images).
 */
export type UsageFormat = 'openai' | 'responses' | 'anthropic' | 'llama' | 'none';

/** The shape of an error answer: OpenAI's `{"error":{…}}` or Anthropic's `{"type":"error","error":{…}}`. */
export type ErrorShape = 'openai' | 'anthropic';

/**
 * One model-routed endpoint and the few things dispatch must know of its protocol; everything
 * else (resolution, failover, breakers, relay, events) is the same for all of them.
 */
export interface Endpoint {
  /** The path as served, and as sent upstream. */
  readonly path: string;
  /** The `route` label of its metrics. */
  readonly route: HttpRoute;
  /** Where `model` is: a JSON body's top-level key, or a `multipart/form-data` field. */
  readonly body: 'json' | 'multipart';
  readonly usage: UsageFormat;
  readonly errors: ErrorShape;
  /** How a break after the commit is told, as the stream's last event. */
  readonly streamError: 'openai' | 'responses' | 'anthropic';
}

function endpoint(path: string, route: HttpRoute, protocol: Omit<Endpoint, 'path' | 'route'>): Endpoint {
  return Object.freeze({ path, route, ...protocol });
}

const openaiJson = { body: 'json', usage: 'openai', errors: 'openai', streamError: 'openai' } as const;
const llamaNative = { body: 'json', usage: 'llama', errors: 'openai', streamError: 'openai' } as const;
const anthropic = { body: 'json', usage: 'anthropic', errors: 'anthropic', streamError: 'anthropic' } as const;
const unmetered = { body: 'json', usage: 'none', errors: 'openai', streamError: 'openai' } as const;
const multipart = { body: 'multipart', usage: 'none', errors: 'openai', streamError: 'openai' } as const;

const chatCompletions = endpoint('/v1/chat/completions', 'chat_completions', openaiJson);
const completions = endpoint('/v1/completions', 'completions', openaiJson);
const embeddings = endpoint('/v1/embeddings', 'embeddings', openaiJson);
const responses = endpoint('/v1/responses', 'responses', { body: 'json', usage: 'responses', errors: 'openai', streamError: 'responses' });
const messages = endpoint('/v1/messages', 'messages', anthropic);
const countTokens = endpoint('/v1/messages/count_tokens', 'count_tokens', anthropic);
const rerank = {
  '/v1/rerank': endpoint('/v1/rerank', 'rerank', openaiJson),
  '/rerank': endpoint('/rerank', 'rerank', openaiJson),
  '/v1/reranking': endpoint('/v1/reranking', 'rerank', openaiJson),
  '/reranking': endpoint('/reranking', 'rerank', openaiJson),
};
const infill = endpoint('/infill', 'infill', llamaNative);
const completion = endpoint('/completion', 'completion', llamaNative);
const speech = endpoint('/v1/audio/speech', 'audio_speech', unmetered);
const images = endpoint('/v1/images/generations', 'images', unmetered);
const transcriptions = endpoint('/v1/audio/transcriptions', 'audio_transcriptions', multipart);
const translations = endpoint('/v1/audio/translations', 'audio_translations', multipart);

/** Every endpoint served with failover, in the order the docs list them. */
export const endpoints: readonly Endpoint[] = [
  chatCompletions,
  completions,
  responses,
  messages,
  countTokens,
  embeddings,
  ...Object.values(rerank),
  infill,
  completion,
  speech,
  images,
  transcriptions,
  translations,
];

/**
 * The endpoint served at `path` (exactly as routed: lower case, no trailing slash), undefined
 * for any other. A `switch`, not a Map: a Map hashes each request's fresh path string.
 */
export function endpointAt(path: string): Endpoint | undefined {
  switch (path) {
    case '/v1/chat/completions':
      return chatCompletions;
    case '/v1/completions':
      return completions;
    case '/v1/embeddings':
      return embeddings;
    case '/v1/responses':
      return responses;
    case '/v1/messages':
      return messages;
    case '/v1/messages/count_tokens':
      return countTokens;
    case '/v1/rerank':
    case '/rerank':
    case '/v1/reranking':
    case '/reranking':
      return rerank[path];
    case '/infill':
      return infill;
    case '/completion':
      return completion;
    case '/v1/audio/speech':
      return speech;
    case '/v1/images/generations':
      return images;
    case '/v1/audio/transcriptions':
      return transcriptions;
    case '/v1/audio/translations':
      return translations;
    default:
      return undefined;
  }
}
