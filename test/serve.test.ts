// The serving example with real HTTP clients on loopback: concurrent streams complete with the right
// number of events, a client that disconnects mid-stream gets its request cancelled and its pages
// freed, and bad bodies get a 400 with a message.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { type RunningServer, startServer } from "../examples/serve";
import { InvalidArgumentError } from "../lib/errors";
import { openRuntime } from "../lib/runtime";
import { createDemoStack, sizesFor } from "../lib/scheduler/demo";

let server: RunningServer;
beforeAll(() => {
  // A small pool (48 pages of 16 tokens) so that concurrent clients also exercise preemption.
  server = startServer({ port: 0, sizes: { numPages: 48, swapPages: 8, maxBatch: 16 } });
});
afterAll(async () => {
  await server.stop();
});

const generate = (body: unknown, signal?: AbortSignal) =>
  fetch(new URL("/generate", server.url), { method: "POST", body: JSON.stringify(body), signal });

/** Reads a server-sent-event stream to its end: the list of event names and their data. */
// The data of every event the demo sends: a token (index, token) or the final summary (tokens).
interface EventData {
  index?: number;
  token?: number;
  tokens?: number[];
}
async function readEvents(response: Response): Promise<{ event: string; data: EventData }[]> {
  const text = await response.text();
  return text
    .split("\n\n")
    .filter((block) => block.trim() !== "")
    .map((block) => {
      const [eventLine, dataLine] = block.split("\n");
      return { event: eventLine!.slice("event: ".length), data: JSON.parse(dataLine!.slice("data: ".length)) };
    });
}

async function waitFor(condition: () => Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await Bun.sleep(10);
  }
}

// biome-ignore lint/suspicious/noExplicitAny: JSON from the server
const stats = async (): Promise<any> => (await fetch(new URL("/stats", server.url))).json();

describe("examples/serve.ts over HTTP", () => {
  test("concurrent clients all complete with one event per token, then done", async () => {
    const bodies = Array.from({ length: 24 }, (_, i) =>
      i % 2
        ? { promptLength: 20 + 7 * i, maxTokens: 5 + (i % 9) }
        : { prompt: [1, 2, 3, 4, 5, 6, 7, 8, 100 + i], maxTokens: 3 + i },
    );
    const responses = await Promise.all(bodies.map((body) => generate(body)));
    for (const r of responses) {
      expect(r.status).toBe(200);
      expect(r.headers.get("content-type")).toBe("text/event-stream");
    }
    const streams = await Promise.all(responses.map(readEvents));
    streams.forEach((events, i) => {
      const tokens = events.filter((e) => e.event === "token");
      expect(tokens.length).toBe(bodies[i]!.maxTokens);
      expect(tokens.map((e) => e.data.index)).toEqual([...Array(bodies[i]!.maxTokens).keys()]);
      expect(events.at(-1)!.event).toBe("done");
      expect(events.at(-1)!.data.tokens).toEqual(tokens.map((e) => e.data.token!));
    });
    const { totals, cache } = await stats();
    expect(totals.finished).toBe(bodies.length);
    expect(cache.pagesUsed).toBe(0);
  });

  test("a client that disconnects mid-stream has its request cancelled and its pages freed", async () => {
    const before = (await stats()).totals.cancelled;
    const finishedBefore = server.stack.scheduler.totals.finished;
    const abort = new AbortController();
    // 699 tokens of context at its end (44 of 48 pages): hundreds of steps, so it is mid-stream when cut.
    const response = await generate({ promptLength: 200, maxTokens: 500 }, abort.signal);
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    await reader.read(); // the first token: the request is running and holds pages
    expect((await stats()).cache.pagesUsed).toBeGreaterThan(0);
    abort.abort();
    await waitFor(async () => {
      const { totals, cache } = await stats();
      return totals.cancelled === before + 1 && cache.pagesUsed === 0;
    });
    expect(server.stack.scheduler.busy).toBe(false);
    expect(server.stack.scheduler.totals.finished).toBe(finishedBefore); // it did not run to the end
  });

  test("bad bodies and requests too long for the pool get a 400 with a message", async () => {
    const bad = [
      "not json",
      JSON.stringify([1, 2]),
      JSON.stringify({ maxTokens: 3 }),
      JSON.stringify({ promptLength: 4 }),
      JSON.stringify({ promptLength: 4, maxTokens: 0 }),
      JSON.stringify({ prompt: "hello", maxTokens: 2 }),
      JSON.stringify({ prompt: [1, -2], maxTokens: 2 }),
      JSON.stringify({ prompt: [1], promptLength: 1, maxTokens: 2 }),
      // Numbers that are not lengths: each was truncated, wrapped or a 500 before.
      '{"promptLength": 1e308, "maxTokens": 2}',
      '{"promptLength": 4, "maxTokens": 1e308}',
      JSON.stringify({ promptLength: 2.5, maxTokens: 2 }),
      JSON.stringify({ promptLength: -3, maxTokens: 2 }),
      JSON.stringify({ promptLength: "NaN", maxTokens: 2 }),
      JSON.stringify({ promptLength: 4, maxTokens: 1.5 }),
      JSON.stringify({ promptLength: 4, maxTokens: -1 }),
      JSON.stringify({ promptLength: 4, maxTokens: "3" }),
      JSON.stringify({ prompt: [1, 2.5], maxTokens: 2 }),
    ];
    for (const body of bad) {
      const r = await fetch(new URL("/generate", server.url), { method: "POST", body });
      expect(r.status, body).toBe(400);
      const json = (await r.json()) as { error: unknown };
      expect(typeof json.error).toBe("string");
      expect((json.error as string).length).toBeGreaterThan(0);
    }
    const huge = await generate({ promptLength: 48 * 16, maxTokens: 2 });
    expect(huge.status).toBe(400);
    expect(((await huge.json()) as { error: string }).error).toContain("too long for the pool");
    expect((await fetch(new URL("/generate", server.url))).status).toBe(405);
    expect((await fetch(new URL("/nowhere", server.url))).status).toBe(404);
    expect((await stats()).cache.pagesUsed).toBe(0);
  });

  test("a prompt of 3e7 placeholder tokens is refused at once, before anything is allocated for it", async () => {
    const started = performance.now();
    const r = await generate({ promptLength: 3e7, maxTokens: 1 });
    const ms = performance.now() - started;
    expect(r.status).toBe(400);
    expect(((await r.json()) as { error: string }).error).toContain("too long for the pool");
    // Filling its 3e7-entry token list took about 200 ms here (and 10 s for 1e8); a size check is O(1).
    expect(ms).toBeLessThan(150);
    // 2^40 tokens could never be allocated at all: a 400 (not a 500) shows nothing was tried.
    const impossible = await generate({ promptLength: 2 ** 40, maxTokens: 1 });
    expect(impossible.status).toBe(400);
    expect((await stats()).cache.pagesUsed).toBe(0);
  });

  test("demo sizes that are not counts are refused with a typed error", () => {
    for (const sizes of [
      { maxBatch: 0 },
      { numPages: 1.5 },
      { numLayers: Number.NaN },
      { swapPages: -1 },
      { dtype: "toString" as "f16" },
    ])
      expect(() => startServer({ port: 0, sizes })).toThrow(InvalidArgumentError);
    const rt = openRuntime({ backend: "cpu" });
    expect(() => createDemoStack(rt, sizesFor(rt, { maxBatch: 2 ** 40 }))).toThrow(InvalidArgumentError);
    rt.dispose();
  });

  test("a body longer than any prompt the pool can hold is refused before it is read", async () => {
    const prompt = Array.from({ length: 48 * 16 * 2 }, () => 1234567890);
    const r = await generate({ prompt, maxTokens: 1 });
    expect(r.status).toBe(400);
    expect(((await r.json()) as { error: string }).error).toContain("longer than any prompt");
  });
});
