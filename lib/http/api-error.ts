// Errors the HTTP API answers with, in OpenAI's shape, so its clients' error handling works unchanged:
//   { "error": { "message": "...", "type": "invalid_request_error", "param": "max_tokens", "code": null } }
import { InvalidArgumentError } from "../errors";
import { RequestTooLargeError } from "../scheduler/errors";

export type ApiErrorType = "invalid_request_error" | "not_found_error" | "server_error" | "service_unavailable";

/** A request the API refuses: its HTTP status and the fields of the error body. */
export class ApiError extends Error {
  readonly status: number;
  readonly type: ApiErrorType;
  readonly param: string | null;
  readonly code: string | null;

  constructor(status: number, message: string, options: { type?: ApiErrorType; param?: string; code?: string } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.type = options.type ?? (status >= 500 ? "server_error" : "invalid_request_error");
    this.param = options.param ?? null;
    this.code = options.code ?? null;
  }

  get body(): { error: { message: string; type: ApiErrorType; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }

  toResponse(): Response {
    return Response.json(this.body, { status: this.status });
  }
}

/**
 * What an error out of submit (or a request's handle) means to a client: refused input and requests too
 * long for the pool or the model are its own (400); anything else is the server's (500).
 */
export function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof SyntaxError)
    return new ApiError(400, `the body is not JSON: ${message}`, { code: "invalid_json" });
  if (error instanceof RequestTooLargeError) return new ApiError(400, message, { code: "context_length_exceeded" });
  if (error instanceof InvalidArgumentError) return new ApiError(400, message);
  return new ApiError(500, message, { code: error instanceof Error ? error.name : undefined });
}
