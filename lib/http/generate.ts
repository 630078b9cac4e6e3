// POST /generate, the demo's first route: {"prompt": [ids]} or {"promptLength": n}, plus "maxTokens",
// answered with named server-sent events ("token" per step, then "done", "cancelled" or "error") and
// errors as {"error": "message"}. /v1/completions is the OpenAI-style route; this one stays for the
// clients and scripts written against it.
import { InvalidArgumentError, Status } from "../errors";
import type { Scheduler } from "../scheduler";
import type { RequestSpec } from "../scheduler/request";
import { toApiError } from "./api-error";
import { readJson } from "./body";
import { SSE_HEADERS, type SseFormat, type SseOptions, sseEvent, sseStream } from "./sse";

const format: SseFormat = {
  token: (event) => sseEvent("token", event),
  end: (result) => sseEvent(result.outcome === "finished" ? "done" : "cancelled", result),
  error: ({ name, message }) => sseEvent("error", { error: name, message }),
};

export interface GenerateContext {
  // biome-ignore lint/suspicious/noExplicitAny: any cache type; the route only submits
  scheduler: Scheduler<any>;
  maxBodyBytes: number;
  inFlight: {
    /** Marks a request in flight (drain waits for all of them); returns the function that ends it. A 503 while draining. */
    begin(): () => void;
    /** A 503 while draining. */
    admitting(): void;
  };
  stream: Omit<SseOptions, "onClose">;
}

export async function generate(req: Request, ctx: GenerateContext): Promise<Response> {
  let end: (() => void) | undefined;
  try {
    end = ctx.inFlight.begin();
    const spec = toSpec(await readJson(req, ctx.maxBodyBytes));
    ctx.inFlight.admitting(); // again: drain may have begun while the body was read
    const handle = ctx.scheduler.submit({ ...spec, signal: req.signal });
    // A request too long for the pool or the model fails at once, before anything was allocated for it:
    // say so with a status, not an empty stream.
    if (handle.error) throw handle.error;
    return new Response(sseStream(handle, format, { ...ctx.stream, onClose: end }), { headers: SSE_HEADERS });
  } catch (error) {
    end?.();
    const { status, message } = toApiError(error);
    return Response.json({ error: message }, { status });
  }
}

/** Only the fields a client may set; the id is the scheduler's to choose. */
function toSpec(body: unknown): RequestSpec {
  const bad = (message: string) => new InvalidArgumentError(Status.INVALID_ARGUMENT, message);
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw bad("body must be a JSON object");
  const { prompt, promptLength, maxTokens } = body as Record<string, unknown>;
  if (prompt !== undefined && !Array.isArray(prompt)) throw bad("prompt must be an array of token ids");
  // The numbers themselves (integers, in range, within the pool) are the scheduler's to check.
  for (const [name, value] of [
    ["promptLength", promptLength],
    ["maxTokens", maxTokens],
  ] as const)
    if (value !== undefined && typeof value !== "number") throw bad(`${name} must be a number`);
  return {
    prompt: prompt as number[] | undefined,
    promptLength: promptLength as number | undefined,
    maxTokens: maxTokens as number,
  };
}
