// What POST /v1/completions answers, in OpenAI's "text_completion" shape: one JSON body, or with
// stream: true one `data: {chunk}` per token, a last chunk with the finish_reason, an optional usage
// chunk, then `data: [DONE]`. With no tokenizer, `text` spells the token ids (" 17 42") and each choice
// carries them as `token_ids` too.
import type { RequestResult, TokenEvent } from "../scheduler/request";
import { toApiError } from "./api-error";
import { type SseFormat, sseData } from "./sse";

export interface CompletionContext {
  /** "cmpl-<request id>" */
  id: string;
  /** Unix seconds. */
  created: number;
  model: string;
  promptTokens: number;
  includeUsage: boolean;
}

const text = (tokens: readonly number[]) => tokens.map((t) => ` ${t}`).join("");

function usage(ctx: CompletionContext, completionTokens: number) {
  return {
    prompt_tokens: ctx.promptTokens,
    completion_tokens: completionTokens,
    total_tokens: ctx.promptTokens + completionTokens,
  };
}

function envelope(ctx: CompletionContext) {
  return { id: ctx.id, object: "text_completion", created: ctx.created, model: ctx.model };
}

function choice(tokens: readonly number[], finishReason: string | null) {
  return { index: 0, text: text(tokens), token_ids: tokens, logprobs: null, finish_reason: finishReason };
}

/** The whole answer of a request without stream. */
export function completionBody(ctx: CompletionContext, result: RequestResult) {
  return {
    ...envelope(ctx),
    choices: [choice(result.tokens, result.finishReason)],
    usage: usage(ctx, result.tokens.length),
  };
}

/** The chunks of a streamed answer. */
export function completionChunks(ctx: CompletionContext): SseFormat {
  return {
    token: (event: TokenEvent) => sseData({ ...envelope(ctx), choices: [choice([event.token], null)] }),
    end(result: RequestResult) {
      let out = sseData({ ...envelope(ctx), choices: [choice([], result.finishReason)] });
      if (ctx.includeUsage) out += sseData({ ...envelope(ctx), choices: [], usage: usage(ctx, result.tokens.length) });
      return out + sseData("[DONE]");
    },
    // Headers (200) are out already: the error goes in the stream, as OpenAI-compatible servers do.
    error: (error: Error) => sseData(toApiError(error).body) + sseData("[DONE]"),
  };
}
