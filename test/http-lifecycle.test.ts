// The server's side of a request's life over real loopback connections: a client that disconnects has
// its request cancelled and its pages freed (streamed or not), a stream that waits for pages gets
// keep-alive comments, and drain() (SIGTERM, in examples/serve.ts) stops admitting while the streams in
// flight run to their end.
import { describe, expect, test } from "bun:test";
import { type RunningServer, startServer } from "../lib/http/server";
import { type CompletionChunk, postJson, readSse, spawnExampleServer, waitFor } from "./support/http-client";
import { hookedHostRunner } from "./support/runners";

const SIZES = { numPages: 48, swapPages: 0, maxBatch: 16 };

async function withServer(run: (server: RunningServer) => Promise<void>, keepAliveMs?: number): Promise<void> {
  const server = startServer({ port: 0, sizes: SIZES, keepAliveMs });
  try {
    await run(server);
  } finally {
    await server.stop();
  }
}

const completions = (server: RunningServer, body: unknown, signal?: AbortSignal) =>
  postJson(server.url, "/v1/completions", body, signal);

/** Reads a streamed completion to its end: its token ids, its finish reason, and whether [DONE] came. */
async function readCompletion(response: Response) {
  const tokens: number[] = [];
  let finish: string | null = null;
  let done = false;
  let comments = 0;
  for await (const e of readSse(response)) {
    comments += e.comments;
    if (e.data === "[DONE]") {
      done = true;
      continue;
    }
    const chunk = JSON.parse(e.data) as CompletionChunk;
    tokens.push(...chunk.choices[0]!.token_ids);
    finish = chunk.choices[0]!.finish_reason ?? finish;
  }
  return { tokens, finish, done, comments };
}

describe("a client that disconnects", () => {
  test("mid-stream: its request is cancelled and its pages freed", async () => {
    await withServer(async (server) => {
      const abort = new AbortController();
      // 699 tokens of context at its end (44 of 48 pages): hundreds of steps, so it is mid-stream when cut.
      const response = await completions(server, { prompt_length: 200, max_tokens: 500, stream: true }, abort.signal);
      const events = readSse(response);
      await events.next(); // a token: it runs and holds pages
      expect(server.stack.cache.stats().pagesUsed).toBeGreaterThan(0);
      abort.abort();
      await waitFor(() => server.stack.scheduler.totals.cancelled === 1 && server.stack.cache.stats().pagesUsed === 0);
      expect(server.stack.scheduler.busy).toBe(false);
      expect(server.stack.scheduler.totals.finished).toBe(0);
    });
  });

  test("before a whole (unstreamed) answer: its request is cancelled too", async () => {
    await withServer(async (server) => {
      const abort = new AbortController();
      const pending = completions(server, { prompt_length: 200, max_tokens: 500 }, abort.signal).catch((e) => e);
      await waitFor(() => server.stack.scheduler.running === 1);
      abort.abort();
      expect((await pending).name).toBe("AbortError");
      await waitFor(() => server.stack.scheduler.totals.cancelled === 1 && server.stack.cache.stats().pagesUsed === 0);
      expect(server.stack.scheduler.totals.finished).toBe(0);
    });
  });
});

describe("a step that fails", () => {
  test("mid-stream: an OpenAI-style error event, then [DONE]; without stream: a 500 with the error body", async () => {
    let decodes = 0;
    const server = startServer({
      port: 0,
      sizes: SIZES,
      runner: (parts) =>
        hookedHostRunner(parts, {
          beforeDecode: () => {
            if (++decodes % 3 === 0) throw new Error("the device fell off the bus");
          },
        }),
    });
    try {
      const events = [];
      for await (const e of readSse(await completions(server, { prompt_length: 5, max_tokens: 10, stream: true })))
        events.push(e.data);
      expect(events.length).toBe(2 + 2); // two tokens, the error, [DONE]
      const { error } = JSON.parse(events[2]!) as { error: { message: string; type: string; code: string } };
      expect(error.type).toBe("server_error");
      expect(error.code).toBe("StepFailedError");
      expect(error.message).toContain("the device fell off the bus");
      expect(events[3]).toBe("[DONE]");
      const whole = await completions(server, { prompt_length: 5, max_tokens: 10 });
      expect(whole.status).toBe(500);
      expect(((await whole.json()) as { error: { message: string } }).error.message).toContain("fell off the bus");
      expect(server.stack.cache.stats().pagesUsed).toBe(0);
    } finally {
      await server.stop();
    }
  });
});

describe("keep-alive comments", () => {
  test("go down a stream while its request waits for pages", async () => {
    await withServer(async (server) => {
      // The first request holds 36 of 48 pages from its admission on, for 200 steps; the second needs 13
      // with one kept free, so it waits until the first is done.
      const holder = completions(server, { prompt_length: 560, max_tokens: 200, stream: true });
      await waitFor(() => server.stack.scheduler.running === 1);
      const waiter = await completions(server, { prompt_length: 200, max_tokens: 3, stream: true });
      const events = readSse(waiter);
      const first = await events.next();
      expect(first.done).toBe(false);
      expect(first.value!.comments).toBeGreaterThan(0); // keep-alives before its first token
      const rest = await readCompletion(await holder);
      expect(rest.tokens.length).toBe(200);
      expect(rest.done).toBe(true);
      let tail = 0;
      for await (const e of events) tail += e.data === "[DONE]" ? 0 : 1;
      expect(tail).toBe(3); // 2 more tokens and the finish chunk
    }, 5);
  });
});

describe("drain", () => {
  test("stops admitting (503, /health 503), lets every stream in flight finish, then stops", async () => {
    const server = startServer({ port: 0, sizes: SIZES });
    try {
      const streams = [150, 200, 250].map((max_tokens, i) =>
        completions(server, { prompt_length: 10 + i, max_tokens, stream: true }).then(readCompletion),
      );
      await waitFor(() => server.stack.scheduler.running === 3);
      const drained = server.drain();
      expect(server.draining).toBe(true);
      const refused = await completions(server, { prompt_length: 5, max_tokens: 2 });
      expect(refused.status).toBe(503);
      expect(((await refused.json()) as { error: { code: string } }).error.code).toBe("draining");
      expect((await fetch(new URL("/health", server.url))).status).toBe(503);
      expect((await postJson(server.url, "/generate", { promptLength: 5, maxTokens: 2 })).status).toBe(503);
      const metrics = await (await fetch(new URL("/metrics", server.url))).text();
      expect(metrics).toContain("pkv_server_draining 1");
      await drained;
      const results = await Promise.all(streams);
      results.forEach((r, i) => {
        expect(r.tokens.length).toBe([150, 200, 250][i]!);
        expect(r.finish).toBe("length");
        expect(r.done).toBe(true);
      });
      expect(server.stack.scheduler.totals.cancelled).toBe(0);
      expect(await fetch(new URL("/health", server.url)).catch((e) => e)).toBeInstanceOf(Error); // closed
    } finally {
      await server.stop();
    }
  });

  test("a request whose body was still arriving when drain began is refused, not left hanging", async () => {
    const server = startServer({ port: 0, sizes: SIZES });
    let sendRest!: () => void;
    const rest = new Promise<void>((resolve) => (sendRest = resolve));
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        controller.enqueue(new TextEncoder().encode('{"prompt_length": 5, '));
        await rest;
        controller.enqueue(new TextEncoder().encode('"max_tokens": 2}'));
        controller.close();
      },
    });
    const pending = fetch(new URL("/v1/completions", server.url), {
      method: "POST",
      body,
      duplex: "half",
    } as RequestInit);
    await Bun.sleep(20); // the server is reading the body
    const drained = server.drain();
    sendRest();
    const response = await pending;
    expect(response.status).toBe(503);
    await drained;
    expect(server.stack.scheduler.totals.steps).toBe(0); // it never reached the scheduler
  });

  test("with nothing in flight it stops at once", async () => {
    const server = startServer({ port: 0, sizes: SIZES });
    const started = performance.now();
    await server.drain();
    expect(performance.now() - started).toBeLessThan(1000);
    expect(await fetch(new URL("/health", server.url)).catch((e) => e)).toBeInstanceOf(Error);
  });

  test("SIGTERM to examples/serve.ts drains: the stream in flight ends with [DONE], the process exits 0", async () => {
    const { proc, url } = await spawnExampleServer({ PKV_BACKEND: "cpu" });
    try {
      const response = await postJson(url!, "/v1/completions", { prompt_length: 50, max_tokens: 300, stream: true });
      const events = readSse(response);
      await events.next(); // running
      proc.kill("SIGTERM");
      let count = 1;
      let done = false;
      for await (const e of events) {
        if (e.data === "[DONE]") done = true;
        else count++;
      }
      expect(done).toBe(true);
      expect(count).toBe(301); // every token and the finish chunk
      expect(await proc.exited).toBe(0);
    } finally {
      proc.kill();
      await proc.exited;
    }
  }, 30_000);
});
