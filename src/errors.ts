export type OpenAIErrorType =
  'invalid_request_error' | 'authentication_error' | 'permission_error' | 'not_found_error' | 'rate_limit_error' | 'api_error' | 'service_unavailable_error';

/**
 * Base of every error the gateway answers with. `code` is stable and is also the OpenAI error
 * `code` the client sees; `status` the HTTP status.
 */
export class GatewayError extends Error {
  readonly code: string;
  readonly status: number;
  readonly openaiType: OpenAIErrorType;
  readonly param: string | null;
  /** Headers the error answer carries (`retry-after`, `x-ratelimit-*`); undefined: none. */
  readonly headers: Readonly<Record<string, string>> | undefined;

  constructor(
    message: string,
    options: {
      code: string;
      status: number;
      openaiType: OpenAIErrorType;
      param?: string | null;
      headers?: Readonly<Record<string, string>>;
      cause?: unknown;
    },
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = options.code;
    this.status = options.status;
    this.openaiType = options.openaiType;
    this.param = options.param ?? null;
    this.headers = options.headers;
  }
}

export class InvalidRequestError extends GatewayError {
  constructor(message: string, param: string | null = null, code = 'invalid_request') {
    super(message, { code, status: 400, openaiType: 'invalid_request_error', param });
  }
}

export class BodyTooLargeError extends GatewayError {
  constructor(limit: number) {
    super(`request body is larger than ${limit} bytes`, { code: 'body_too_large', status: 413, openaiType: 'invalid_request_error' });
  }
}

export class AuthenticationError extends GatewayError {
  constructor(message = 'missing or invalid API key') {
    super(message, { code: 'invalid_api_key', status: 401, openaiType: 'authentication_error' });
  }
}

export class PermissionDeniedError extends GatewayError {
  constructor(message: string) {
    super(message, { code: 'permission_denied', status: 403, openaiType: 'permission_error' });
  }
}

export class UnsupportedContentEncodingError extends GatewayError {
  constructor(encoding: string) {
    super(`request bodies encoded as "${encoding}" are not accepted; send plain JSON`, {
      code: 'unsupported_content_encoding',
      status: 415,
      openaiType: 'invalid_request_error',
    });
  }
}

export class ModelNotFoundError extends GatewayError {
  constructor(model: string) {
    super(`the model "${model}" does not exist`, { code: 'model_not_found', status: 404, openaiType: 'invalid_request_error', param: 'model' });
  }
}

export class RouteNotFoundError extends GatewayError {
  constructor(method: string, path: string) {
    super(`no route for ${method} ${path}`, { code: 'not_found', status: 404, openaiType: 'invalid_request_error' });
  }
}

export class NoHealthyCandidateError extends GatewayError {
  constructor(model: string) {
    super(`no healthy candidate for "${model}"`, { code: 'no_healthy_candidate', status: 503, openaiType: 'service_unavailable_error' });
  }
}

/**
 * Every candidate was tried and failed. The message names candidates and what each answered
 * (`gpu-a/qwen (connect_error), gpu-b/qwen (503)`), never an address or an upstream's own text:
 * those go to the logs and the dispatch log.
 */
export class AllCandidatesFailedError extends GatewayError {
  constructor(model: string, attempts: readonly { candidate: string; outcome: string; http_status: number | null }[]) {
    const tried = attempts.map((attempt) => `${attempt.candidate} (${attempt.http_status ?? attempt.outcome})`).join(', ');
    super(`every candidate for "${model}" failed: ${tried || 'none could be tried'}`, {
      code: 'all_candidates_failed',
      status: 502,
      openaiType: 'api_error',
    });
  }
}

/** The upstream broke off an answer already under way: told as the stream's last event. */
export class StreamBrokenError extends GatewayError {
  constructor(message: string) {
    super(message, { code: 'stream_error', status: 502, openaiType: 'api_error' });
  }
}

/** The OpenAI error body: the one shape every error of the gateway takes. */
export function toOpenAIError(error: GatewayError): { error: { message: string; type: string; param: string | null; code: string } } {
  return { error: { message: error.message, type: error.openaiType, param: error.param, code: error.code } };
}
