import { StreamBrokenError, toOpenAIError, type GatewayError } from '../errors.js';
import type { Endpoint, ErrorShape } from './endpoints.js';

/** Anthropic's error types, for the statuses the gateway answers with. */
function anthropicType(error: GatewayError): string {
  if (error.status === 404) return 'not_found_error';
  switch (error.openaiType) {
    case 'invalid_request_error':
    case 'authentication_error':
    case 'permission_error':
    case 'rate_limit_error':
      return error.openaiType;
    case 'not_found_error':
      return 'not_found_error';
    case 'service_unavailable_error':
      return 'overloaded_error';
    default:
      return 'api_error';
  }
}

/** An error answer in the shape the endpoint's clients read: OpenAI's, or Anthropic's on `/v1/messages*`. */
export function errorBody(error: GatewayError, shape: ErrorShape): object {
  if (shape === 'openai') return toOpenAIError(error);
  return { type: 'error', error: { type: anthropicType(error), message: error.message } };
}

/**
 * The event that ends a stream broken after the commit, in the endpoint's own protocol, so that
 * its official client raises it: chat and completions `data: {"error":…}`; the Responses API an
 * `error` event (it carries the `error` object too, which the `openai` SDK's stream raises on);
 * Anthropic an `error` event (which `@anthropic-ai/sdk` raises as an APIError).
 */
export function streamErrorEvent(endpoint: Endpoint, message: string): string {
  const error = new StreamBrokenError(message);
  switch (endpoint.streamError) {
    case 'openai':
      return `data: ${JSON.stringify(toOpenAIError(error))}\n\n`;
    case 'responses': {
      const body = toOpenAIError(error).error;
      return `event: error\ndata: ${JSON.stringify({ type: 'error', code: body.code, message, param: null, error: body })}\n\n`;
    }
    case 'anthropic':
      return `event: error\ndata: ${JSON.stringify(errorBody(error, 'anthropic'))}\n\n`;
  }
}
