import type { DispatchEvent } from '../../src/events/dispatch-event.js';
import { timeOrderedUuid } from '../../src/shared/time-ordered-uuid.js';

/** A valid dispatch event, its ids made as the gateway makes them; `overrides` replace fields. */
export function makeDispatchEvent(overrides: Partial<DispatchEvent> = {}): DispatchEvent {
  return {
    id: timeOrderedUuid(),
    created_at: new Date().toISOString(),
    request_id: timeOrderedUuid(),
    requested_model: 'auto:chat',
    virtual_model: 'auto:chat',
    chosen_provider_id: 'gpu-a',
    chosen_model: 'qwen2.5-7b-instruct',
    candidates_tried: ['gpu-a/qwen2.5-7b-instruct'],
    attempts: [{ candidate: 'gpu-a/qwen2.5-7b-instruct', outcome: 'ok', http_status: 200, ms: 12 }],
    status: 'dispatched',
    source: 'booChat',
    error: null,
    duration_ms: 42,
    ttfb_ms: 12,
    stream: false,
    prompt_tokens: 10,
    completion_tokens: 20,
    replica: 'test',
    endpoint: '/v1/chat/completions',
    resumes: 0,
    queued_ms: 0,
    key_name: null,
    ...overrides,
  };
}

/** `count` valid events with distinct ids. */
export function makeDispatchEvents(count: number, overrides: Partial<DispatchEvent> = {}): DispatchEvent[] {
  return Array.from({ length: count }, () => makeDispatchEvent(overrides));
}
