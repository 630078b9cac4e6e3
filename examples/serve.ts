// A Bun.serve app over the Scheduler: many HTTP clients, one continuous batch.
//
//   bun examples/serve.ts                      # PORT=3000 by default
//   curl -N -X POST localhost:3000/generate -d '{"promptLength": 100, "maxTokens": 20}'
//
// POST /generate takes {"prompt": [token ids]} or {"promptLength": n}, plus "maxTokens", and streams
// one server-sent event per generated token, then "done" (or "error"). GET /stats returns the
// scheduler's totals and the cache's page counts. A client that disconnects has its request cancelled
// and its pages freed. The model is synthetic (deterministic activations, no weights): the point is
// the serving loop, not the text.
import {
  createDemoStack,
  type DemoSizes,
  type DemoStack,
  InvalidArgumentError,
  openRuntime,
  type RequestHandle,
  type RequestSpec,
  RequestTooLargeError,
  type Runtime,
  Status,
  sizesFor,
} from "persistentkv";

export interface ServeOptions {
  port?: number; // 0 picks a free port
  hostname?: string;
  rt?: Runtime; // default: a runtime of its own (auto backend), closed with the server
  sizes?: Partial<DemoSizes>;
}

export interface RunningServer {
  url: URL;
  stack: DemoStack;
  stop(): Promise<void>;
}

export function startServer(options: ServeOptions = {}): RunningServer {
  const rt = options.rt ?? openRuntime({ backend: (process.env.PKV_BACKEND ?? "auto") as "auto" });
  let stack: DemoStack;
  try {
    stack = createDemoStack(rt, sizesFor(rt, options.sizes));
  } catch (error) {
    if (!options.rt) rt.dispose();
    throw error;
  }
  const { scheduler, cache } = stack;
  const loop = scheduler.run(); // steps while there is work, yielding to the event loop between steps
  // The longest body a request that fits the pool can need: its prompt as ids of up to 10 digits and a
  // comma each, plus the other fields. Anything longer is refused before it is read.
  const maxBodyBytes = 4096 + 11 * stack.sizes.numPages * stack.sizes.pageSize;

  const server = Bun.serve({
    port: options.port ?? 3000,
    hostname: options.hostname ?? "127.0.0.1",
    idleTimeout: 0, // streams may be quiet while a request waits for pages
    maxRequestBodySize: 2 * maxBodyBytes, // a backstop (Bun answers 413) for bodies that do not say their length
    async fetch(req) {
      const { pathname } = new URL(req.url);
      if (pathname === "/stats" && req.method === "GET")
        return Response.json({ totals: scheduler.totals, cache: cache.stats() });
      if (pathname !== "/generate") return Response.json({ error: "not found" }, { status: 404 });
      if (req.method !== "POST") return Response.json({ error: "use POST" }, { status: 405 });
      const declared = Number(req.headers.get("content-length") ?? 0);
      if (declared > maxBodyBytes)
        return Response.json(
          { error: `a body of ${declared} bytes is longer than any prompt the pool can hold` },
          { status: 400 },
        );
      let handle: RequestHandle;
      try {
        handle = scheduler.submit(toSpec(await req.json()));
      } catch (error) {
        // Unparsable JSON or a spec the scheduler refused is the client's fault; anything else is ours.
        const client = error instanceof SyntaxError || error instanceof InvalidArgumentError;
        return Response.json({ error: (error as Error).message }, { status: client ? 400 : 500 });
      }
      // A request too long for the pool or the model fails at once, before anything was allocated for it:
      // say so with a status, not an empty stream.
      if (handle.error) {
        const client = handle.error instanceof RequestTooLargeError;
        return Response.json({ error: handle.error.message }, { status: client ? 400 : 500 });
      }
      req.signal.addEventListener("abort", () => handle.cancel());
      return new Response(eventStream(handle), {
        headers: { "content-type": "text/event-stream", "cache-control": "no-cache" },
      });
    },
  });

  return {
    url: new URL(`http://${server.hostname}:${server.port}`),
    stack,
    async stop() {
      server.stop(true);
      await stack.close();
      await loop;
      if (!options.rt) rt.dispose();
    },
  };
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

/** Server-sent events: "token" per step, then "done" with the result or "error" with the typed error. */
function eventStream(handle: RequestHandle): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  const sse = (event: string, data: unknown) => encoder.encode(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  let open = true;
  return new ReadableStream({
    async start(controller) {
      const send = (event: string, data: unknown) => open && controller.enqueue(sse(event, data));
      try {
        for await (const token of handle) send("token", token);
        const result = await handle.done;
        send(result.outcome === "finished" ? "done" : "cancelled", result);
      } catch (error) {
        const { name, message } = error as Error;
        send("error", { error: name, message });
      }
      if (open) controller.close();
    },
    cancel() {
      open = false;
      handle.cancel(); // the client disconnected: free its pages now, not when it would have finished
    },
  });
}

if (import.meta.main) {
  const { url, stack } = startServer({ port: Number(process.env.PORT ?? 3000) });
  const { numLayers, numPages, pageSize } = stack.sizes;
  console.log(`serving on ${url} (${numLayers} layers, ${numPages} pages of ${pageSize} tokens, synthetic model)`);
  console.log(`try: curl -N -X POST ${url}generate -d '{"promptLength": 100, "maxTokens": 20}'`);
}
