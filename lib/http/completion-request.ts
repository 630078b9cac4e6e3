// The body of POST /v1/completions, checked field by field: a field this server does not know, or one
// of the wrong type, is a 400 naming it (a silently ignored `temperature` would be a lie about what ran).
// There is no tokenizer: the prompt is token ids, or only a length (`prompt_length`, content unknown to
// the prefix cache), and `stop` is token ids. Sizes against the pool and the model are the scheduler's.
import { ApiError } from "./api-error";

export interface CompletionRequest {
  /** The model id asked for, if any (it must be the one served). */
  model: string | undefined;
  prompt: number[] | undefined;
  promptLength: number | undefined;
  maxTokens: number;
  stop: number[];
  stream: boolean;
  /** With stream: a last chunk carries the usage (OpenAI's stream_options.include_usage). */
  includeUsage: boolean;
}

/** OpenAI's default when max_tokens is not given. */
export const DEFAULT_MAX_TOKENS = 16;

const FIELDS = ["model", "prompt", "prompt_length", "max_tokens", "stop", "stream", "stream_options"] as const;

const invalid = (param: string, message: string) => new ApiError(400, message, { param });

function isTokenId(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 0;
}

function tokenIds(param: string, value: unknown): number[] {
  if (!Array.isArray(value) || !value.every(isTokenId))
    throw invalid(
      param,
      `${param} must be an array of token ids (integers >= 0): this server has no tokenizer, so text is not accepted`,
    );
  return value;
}

function count(param: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1)
    throw invalid(param, `${param} must be an integer >= 1, not ${JSON.stringify(value)}`);
  return value;
}

export function parseCompletionRequest(body: unknown): CompletionRequest {
  if (typeof body !== "object" || body === null || Array.isArray(body))
    throw new ApiError(400, "the body must be a JSON object");
  const fields = body as Record<string, unknown>;
  for (const name of Object.keys(fields))
    if (!(FIELDS as readonly string[]).includes(name))
      throw invalid(name, `unknown field "${name}"; this server takes ${FIELDS.join(", ")}`);
  const { model, prompt, prompt_length, max_tokens, stop, stream, stream_options } = fields;
  if (model !== undefined && typeof model !== "string") throw invalid("model", "model must be a string");
  if ((prompt === undefined) === (prompt_length === undefined))
    throw invalid("prompt", "give exactly one of prompt (token ids) or prompt_length");
  const ids = prompt === undefined ? undefined : tokenIds("prompt", prompt);
  if (ids?.length === 0) throw invalid("prompt", "prompt must hold at least one token id");
  const promptLength = prompt_length === undefined ? undefined : count("prompt_length", prompt_length);
  const maxTokens =
    max_tokens === undefined || max_tokens === null ? DEFAULT_MAX_TOKENS : count("max_tokens", max_tokens);
  // OpenAI's stop is one string or a list; here one token id or a list of them.
  const stops = stop === undefined || stop === null ? [] : isTokenId(stop) ? [stop] : tokenIds("stop", stop);
  if (stream !== undefined && stream !== null && typeof stream !== "boolean")
    throw invalid("stream", "stream must be a boolean");
  let includeUsage = false;
  if (stream_options !== undefined && stream_options !== null) {
    if (stream !== true) throw invalid("stream_options", "stream_options is only allowed with stream: true");
    if (typeof stream_options !== "object" || Array.isArray(stream_options))
      throw invalid("stream_options", "stream_options must be an object");
    for (const [name, value] of Object.entries(stream_options)) {
      if (name !== "include_usage")
        throw invalid(`stream_options.${name}`, `unknown field "stream_options.${name}"; only include_usage is taken`);
      if (typeof value !== "boolean") throw invalid("stream_options.include_usage", "include_usage must be a boolean");
      includeUsage = value;
    }
  }
  return { model, prompt: ids, promptLength, maxTokens, stop: stops, stream: stream === true, includeUsage };
}
