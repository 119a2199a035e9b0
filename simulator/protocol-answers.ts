/**
 * The simulated fleet's answers in each protocol llama-swap routes by model: their JSON bodies
 * and their streams, shaped as the official clients read them (OpenAI's chat, completions and
 * Responses API, Anthropic's Messages API, llama.cpp's native `/completion` and `/infill`,
 * embeddings, rerank, audio and images).
 */

export type SimulatedEndpoint =
  | 'chat'
  | 'completions'
  | 'embeddings'
  | 'responses'
  | 'messages'
  | 'count_tokens'
  | 'rerank'
  | 'completion'
  | 'infill'
  | 'speech'
  | 'images'
  | 'transcriptions'
  | 'translations';

/** The paths the simulated servers answer with a model, as llama-swap routes them. */
export const simulatedPaths: Readonly<Record<string, SimulatedEndpoint>> = {
  '/v1/chat/completions': 'chat',
  '/v1/completions': 'completions',
  '/v1/embeddings': 'embeddings',
  '/v1/responses': 'responses',
  '/v1/messages': 'messages',
  '/v1/messages/count_tokens': 'count_tokens',
  '/v1/rerank': 'rerank',
  '/rerank': 'rerank',
  '/v1/reranking': 'rerank',
  '/reranking': 'rerank',
  '/completion': 'completion',
  '/infill': 'infill',
  '/v1/audio/speech': 'speech',
  '/v1/images/generations': 'images',
  '/v1/audio/transcriptions': 'transcriptions',
  '/v1/audio/translations': 'translations',
};

export type Usage = { prompt_tokens: number; completion_tokens: number };

/** Whether the endpoint streams when asked to (`stream: true`). */
export function canStream(endpoint: SimulatedEndpoint): boolean {
  return (
    endpoint === 'chat' ||
    endpoint === 'completions' ||
    endpoint === 'responses' ||
    endpoint === 'messages' ||
    endpoint === 'completion' ||
    endpoint === 'infill'
  );
}

/** The `model` of a multipart form, read the simple way (the gateway's own reader is stricter). */
export function formModel(body: Buffer, contentType: string | undefined): string | undefined {
  const boundary = /boundary="?([^";]+)"?/i.exec(contentType ?? '')?.[1];
  if (!boundary) return undefined;
  for (const part of body.toString('latin1').split(`--${boundary}`)) {
    const headerEnd = part.indexOf('\r\n\r\n');
    if (headerEnd < 0 || !/name="model"/i.test(part.slice(0, headerEnd))) continue;
    return Buffer.from(part.slice(headerEnd + 4, part.endsWith('\r\n') ? -2 : undefined), 'latin1').toString('utf8');
  }
  return undefined;
}

const sse = (data: unknown, event?: string) => `${event ? `event: ${event}\n` : ''}data: ${JSON.stringify(data)}\n\n`;

/** The pieces of one streamed answer: what comes before the first content event, each content event, what ends it. */
export interface StreamEvents {
  start(): string;
  piece(text: string, index: number): string;
  /** A chunk that starts a tool call (chat); a plain piece elsewhere. */
  toolCall(): string;
  end(content: string, usage: Usage | null): string;
}

/** The stream of `endpoint` (one of those that {@link canStream}). */
export function streamEvents(endpoint: SimulatedEndpoint, id: string, model: string, created: number): StreamEvents {
  switch (endpoint) {
    case 'responses':
      return responsesStream(id, model, created);
    case 'messages':
      return messagesStream(id, model);
    case 'completion':
    case 'infill':
      return {
        start: () => '',
        toolCall: () => sse({ content: '', stop: false, id_slot: 0, tokens: [] }),
        piece: (text) => sse({ content: text, stop: false, id_slot: 0, tokens: [] }),
        end: (_content, usage) =>
          sse({
            content: '',
            stop: true,
            model,
            id_slot: 0,
            ...(usage ? { tokens_evaluated: usage.prompt_tokens, tokens_predicted: usage.completion_tokens } : {}),
          }),
      };
    default: {
      const object = endpoint === 'completions' ? 'text_completion' : 'chat.completion.chunk';
      const choice = (text: string, first: boolean) =>
        endpoint === 'completions'
          ? { index: 0, text, finish_reason: null, logprobs: null }
          : { index: 0, delta: first ? { role: 'assistant', content: text } : { content: text }, finish_reason: null };
      const toolCall = { index: 0, id: `call_${id}`, type: 'function', function: { name: 'lookup', arguments: '' } };
      return {
        start: () => '',
        piece: (text, index) => sse({ id, object, created, model, choices: [choice(text, index === 0)] }),
        toolCall: () =>
          sse({
            id,
            object,
            created,
            model,
            choices: [{ index: 0, delta: { role: 'assistant', content: null, tool_calls: [toolCall] }, finish_reason: null }],
          }),
        end: (_content, usage) => {
          const final =
            endpoint === 'completions' ? { index: 0, text: '', finish_reason: 'stop', logprobs: null } : { index: 0, delta: {}, finish_reason: 'stop' };
          const usageField = usage ? { usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens } } : {};
          return `${sse({ id, object, created, model, choices: [final], ...usageField })}data: [DONE]\n\n`;
        },
      };
    }
  }
}

function responseObject(id: string, model: string, created: number, status: string, content: string | undefined, usage: Usage | null): object {
  const output =
    content === undefined
      ? []
      : [{ id: `msg_${id}`, type: 'message', status: 'completed', role: 'assistant', content: [{ type: 'output_text', text: content, annotations: [] }] }];
  return {
    id: `resp_${id}`,
    object: 'response',
    created_at: created,
    status,
    model,
    output,
    parallel_tool_calls: true,
    tool_choice: 'auto',
    tools: [],
    usage: usage
      ? {
          input_tokens: usage.prompt_tokens,
          output_tokens: usage.completion_tokens,
          total_tokens: usage.prompt_tokens + usage.completion_tokens,
          input_tokens_details: { cached_tokens: 0 },
          output_tokens_details: { reasoning_tokens: 0 },
        }
      : null,
  };
}

function responsesStream(id: string, model: string, created: number): StreamEvents {
  let sequence = 0;
  const item = { id: `msg_${id}`, output_index: 0, content_index: 0 };
  const event = (type: string, fields: object) => sse({ type, sequence_number: sequence++, ...fields }, type);
  return {
    start: () =>
      event('response.created', { response: responseObject(id, model, created, 'in_progress', undefined, null) }) +
      event('response.output_item.added', { output_index: 0, item: { id: item.id, type: 'message', status: 'in_progress', role: 'assistant', content: [] } }) +
      event('response.content_part.added', { item_id: item.id, output_index: 0, content_index: 0, part: { type: 'output_text', text: '', annotations: [] } }),
    piece: (text) => event('response.output_text.delta', { item_id: item.id, output_index: 0, content_index: 0, delta: text }),
    toolCall: () => event('response.output_text.delta', { item_id: item.id, output_index: 0, content_index: 0, delta: '' }),
    end: (content, usage) =>
      event('response.output_text.done', { item_id: item.id, output_index: 0, content_index: 0, text: content }) +
      event('response.content_part.done', {
        item_id: item.id,
        output_index: 0,
        content_index: 0,
        part: { type: 'output_text', text: content, annotations: [] },
      }) +
      event('response.completed', { response: responseObject(id, model, created, 'completed', content, usage) }),
  };
}

function messagesStream(id: string, model: string): StreamEvents {
  return {
    start: () =>
      sse(
        {
          type: 'message_start',
          message: {
            id: `msg_${id}`,
            type: 'message',
            role: 'assistant',
            model,
            content: [],
            stop_reason: null,
            stop_sequence: null,
            usage: { input_tokens: 7, output_tokens: 1 },
          },
        },
        'message_start',
      ) + sse({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }, 'content_block_start'),
    piece: (text) => sse({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } }, 'content_block_delta'),
    toolCall: () => sse({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: '' } }, 'content_block_delta'),
    end: (_content, usage) =>
      sse({ type: 'content_block_stop', index: 0 }, 'content_block_stop') +
      sse(
        { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: usage?.completion_tokens ?? 0 } },
        'message_delta',
      ) +
      sse({ type: 'message_stop' }, 'message_stop'),
  };
}

/** A whole (not streamed) answer of `endpoint`. */
export function jsonAnswer(
  endpoint: SimulatedEndpoint,
  answer: { id: string; model: string; created: number; content: string; usage: Usage | null; body: Record<string, unknown> | undefined; name: string },
): { contentType: string; body: string | Buffer } {
  const { id, model, created, content, usage, body } = answer;
  const json = (value: unknown) => ({ contentType: 'application/json; charset=utf-8', body: JSON.stringify(value) });
  const usageField = usage ? { usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens } } : {};
  switch (endpoint) {
    case 'embeddings': {
      const input = body?.input;
      const inputs = Array.isArray(input) ? input : [input];
      return json({
        object: 'list',
        model,
        data: inputs.map((_, index) => ({ object: 'embedding', index, embedding: [0.1 * (index + 1), 0.2, 0.3, 0.4] })),
        usage: { prompt_tokens: usage?.prompt_tokens ?? 7, total_tokens: usage?.prompt_tokens ?? 7 },
      });
    }
    case 'completions':
      return json({
        id: `cmpl-${id}`,
        object: 'text_completion',
        created,
        model,
        choices: [{ index: 0, text: content, finish_reason: 'stop', logprobs: null }],
        ...usageField,
      });
    case 'responses':
      return json(responseObject(id, model, created, 'completed', content, usage));
    case 'messages':
      return json({
        id: `msg_${id}`,
        type: 'message',
        role: 'assistant',
        model,
        content: [{ type: 'text', text: content }],
        stop_reason: 'end_turn',
        stop_sequence: null,
        usage: { input_tokens: usage?.prompt_tokens ?? 0, output_tokens: usage?.completion_tokens ?? 0 },
      });
    case 'count_tokens':
      return json({ input_tokens: usage?.prompt_tokens ?? 7 });
    case 'rerank': {
      const documents = Array.isArray(body?.documents) ? body.documents : [];
      return json({
        model,
        object: 'list',
        results: documents.map((_, index) => ({ index, relevance_score: 1 / (index + 1) })),
        usage: { prompt_tokens: usage?.prompt_tokens ?? 7, total_tokens: usage?.prompt_tokens ?? 7 },
      });
    }
    case 'completion':
    case 'infill':
      return json({ content, stop: true, model, ...(usage ? { tokens_evaluated: usage.prompt_tokens, tokens_predicted: usage.completion_tokens } : {}) });
    case 'speech':
      // A few bytes that look like an MP3 (ID3 tag), naming who spoke: binary, relayed as is.
      return { contentType: 'audio/mpeg', body: Buffer.concat([Buffer.from('ID3\u0004\u0000\u0000'), Buffer.from(`${answer.name}:${content}`)]) };
    case 'images':
      return json({ created, data: [{ b64_json: Buffer.from(`${answer.name}:${content}`).toString('base64') }] });
    case 'transcriptions':
    case 'translations':
      return json({ text: content });
    case 'chat':
      return json({
        id: `chatcmpl-${id}`,
        object: 'chat.completion',
        created,
        model,
        choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
        ...usageField,
      });
  }
}
