// A Bun.serve app over the Scheduler: many HTTP clients, one continuous batch.
//
//   POST /v1/completions   OpenAI-style: {"prompt": [ids] | "prompt_length": n, "max_tokens", "stop", "stream"}
//   GET  /v1/models        the one model served
//   GET  /health           200 while serving, 503 while draining
//   GET  /metrics          Prometheus text
//   POST /generate         the demo's first route (named events); GET /stats its JSON totals
//
// drain() (and SIGTERM, in examples/serve.ts) stops admitting (503), lets every request in flight
// finish its stream, then stops the server, the scheduler and the stack.
import { InvalidArgumentError, Status } from "../errors";
import { type Backend, type Runtime, openRuntime } from "../runtime";
import { type DemoOptions, type DemoSizes, type DemoStack, createDemoStack, sizesFor } from "../scheduler/demo";
import { show } from "../validate";
import { ApiError, toApiError } from "./api-error";
import { maxBodyBytes, readJson } from "./body";
import { parseCompletionRequest } from "./completion-request";
import { type CompletionContext, completionBody, completionChunks } from "./completion-response";
import { generate } from "./generate";
import { METRICS_CONTENT_TYPE, renderMetrics } from "./metrics";
import { SSE_HEADERS, sseStream } from "./sse";

export interface ServeOptions {
  port?: number; // 0 picks a free port
  hostname?: string;
  rt?: Runtime; // default: a runtime of its own, closed with the server
  backend?: Backend | "auto"; // of that runtime (default "auto")
  sizes?: Partial<DemoSizes>;
  /** The decode policy, and the step's runner (default: the host path); see createDemoStack. */
  policy?: DemoOptions["policy"];
  runner?: DemoOptions["runner"];
  /** The id /v1/models lists and /v1/completions accepts (default "pkv-synthetic"). */
  modelId?: string;
  /** A comment goes down a stream after this long without an event (default 15 s). */
  keepAliveMs?: number;
}

export interface RunningServer {
  url: URL;
  stack: DemoStack;
  readonly draining: boolean;
  /** Stops admitting, waits for every request in flight to end, then stop(). */
  drain(): Promise<void>;
  /** Stops at once: live requests are cancelled. */
  stop(): Promise<void>;
}

/** Counts requests in flight, so that drain can wait for the last one; admits none once draining. */
class InFlight {
  #count = 0;
  #idle: (() => void)[] = [];
  draining = false;

  /** A 503 once draining. */
  admitting(): void {
    if (this.draining)
      throw new ApiError(503, "the server is draining: it takes no new requests", {
        type: "service_unavailable",
        code: "draining",
      });
  }

  /** The function that ends the request in flight; a 503 once draining. */
  begin(): () => void {
    this.admitting();
    this.#count++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      if (--this.#count === 0) for (const resolve of this.#idle.splice(0)) resolve();
    };
  }

  idle(): Promise<void> {
    return this.#count === 0 ? Promise.resolve() : new Promise((resolve) => this.#idle.push(resolve));
  }
}

const method = (req: Request, allowed: string) => {
  if (req.method !== allowed)
    throw new ApiError(405, `use ${allowed} for ${new URL(req.url).pathname}`, { code: "method_not_allowed" });
};

/** The server's own options, checked before anything is opened. */
function checkOptions(options: ServeOptions): { modelId: string; keepAliveMs: number } {
  const bad = (message: string) => new InvalidArgumentError(Status.INVALID_ARGUMENT, `startServer: ${message}`);
  const { modelId = "pkv-synthetic", keepAliveMs = 15_000 } = options;
  if (typeof modelId !== "string" || modelId === "") throw bad(`modelId ${show(modelId)} is not a non-empty string`);
  if (typeof keepAliveMs !== "number" || !(keepAliveMs > 0) || !Number.isFinite(keepAliveMs))
    throw bad(`keepAliveMs ${show(keepAliveMs)} is not a positive number of milliseconds`);
  return { modelId, keepAliveMs };
}

export function startServer(options: ServeOptions = {}): RunningServer {
  const { modelId, keepAliveMs } = checkOptions(options);
  const rt = options.rt ?? openRuntime({ backend: options.backend ?? "auto" });
  let stack: DemoStack;
  try {
    stack = createDemoStack(rt, sizesFor(rt, options.sizes), { policy: options.policy, runner: options.runner });
  } catch (error) {
    if (!options.rt) rt.dispose();
    throw error;
  }
  const { scheduler, cache, sizes } = stack;
  const created = Math.floor(Date.now() / 1000);
  const maxContext = sizes.numPages * sizes.pageSize;
  const bodyLimit = maxBodyBytes(maxContext);
  const inFlight = new InFlight();
  const loop = scheduler.run(); // steps while there is work, yielding to the event loop between steps

  async function completions(req: Request): Promise<Response> {
    // In flight from here (drain waits for it), and refused at once while draining.
    const end = inFlight.begin();
    try {
      const request = parseCompletionRequest(await readJson(req, bodyLimit));
      inFlight.admitting(); // again: drain may have begun while the body was read
      if (request.model !== undefined && request.model !== modelId)
        throw new ApiError(404, `the model "${request.model}" is not served here; GET /v1/models lists "${modelId}"`, {
          type: "not_found_error",
          param: "model",
          code: "model_not_found",
        });
      const handle = scheduler.submit({
        prompt: request.prompt,
        promptLength: request.promptLength,
        maxTokens: request.maxTokens,
        stop: request.stop,
        signal: req.signal, // a client that disconnects cancels its request
      });
      if (handle.error) throw handle.error; // too long for the pool or the model: refused before anything ran
      const ctx: CompletionContext = {
        id: `cmpl-${handle.id}`,
        created: Math.floor(Date.now() / 1000),
        model: modelId,
        promptTokens: request.prompt?.length ?? request.promptLength!,
        includeUsage: request.includeUsage,
      };
      if (request.stream)
        return new Response(sseStream(handle, completionChunks(ctx), { keepAliveMs, onClose: end }), {
          headers: SSE_HEADERS,
        });
      const result = await handle.settled;
      end();
      if (result.error) throw result.error;
      if (result.finishReason === "cancelled")
        throw new ApiError(503, `request ${handle.id} was cancelled before it finished`, { code: "cancelled" });
      return Response.json(completionBody(ctx, result));
    } catch (error) {
      end();
      throw error;
    }
  }

  const server = Bun.serve({
    port: options.port ?? 3000,
    hostname: options.hostname ?? "127.0.0.1",
    idleTimeout: 0, // streams may be quiet while a request waits for pages (keep-alive comments cover proxies)
    maxRequestBodySize: 2 * bodyLimit, // a backstop (Bun answers 413) for bodies that do not say their length
    async fetch(req) {
      const { pathname } = new URL(req.url);
      try {
        switch (pathname) {
          case "/v1/completions":
            method(req, "POST");
            return await completions(req);
          case "/v1/models":
            method(req, "GET");
            return Response.json({
              object: "list",
              data: [{ id: modelId, object: "model", created, owned_by: "persistentkv", max_model_len: maxContext }],
            });
          case "/health":
            method(req, "GET");
            return Response.json(
              { status: inFlight.draining ? "draining" : "ok" },
              { status: inFlight.draining ? 503 : 200 },
            );
          case "/metrics":
            method(req, "GET");
            return new Response(renderMetrics({ scheduler, cache, draining: inFlight.draining }), {
              headers: { "content-type": METRICS_CONTENT_TYPE },
            });
          case "/generate":
            if (req.method !== "POST") return Response.json({ error: "use POST" }, { status: 405 });
            return await generate(req, {
              scheduler,
              maxBodyBytes: bodyLimit,
              inFlight,
              stream: { keepAliveMs },
            });
          case "/stats":
            method(req, "GET");
            return Response.json({ totals: scheduler.totals, cache: cache.stats() });
          default:
            throw new ApiError(404, `no route ${pathname}`, { type: "not_found_error", code: "not_found" });
        }
      } catch (error) {
        return toApiError(error).toResponse();
      }
    },
  });

  let stopped: Promise<void> | null = null;
  /** Gracefully: the last responses go out before the connections close; else they are cut at once. */
  const stop = (graceful = false) => {
    stopped ??= (async () => {
      await server.stop(!graceful);
      await stack.close();
      await loop;
      if (!options.rt) rt.dispose();
    })();
    return stopped;
  };

  return {
    url: new URL(`http://${server.hostname}:${server.port}`),
    stack,
    get draining() {
      return inFlight.draining;
    },
    async drain() {
      inFlight.draining = true;
      await inFlight.idle();
      await stop(true);
    },
    stop: () => stop(),
  };
}
