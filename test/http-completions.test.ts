// The OpenAI-style API with real HTTP clients on loopback: /v1/completions answers whole or streamed
// (data: chunks, a finish_reason, optional usage, data: [DONE]), stop token ids end a completion,
// /v1/models, /health and the legacy routes answer, and every unknown or mistyped field, bad body,
// unknown model or route gets its 4xx with an OpenAI-style error body.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { InvalidArgumentError } from "../lib/errors";
import { type RunningServer, startServer } from "../lib/http/server";
import { type CompletionChunk, collectSse, postJson, readSse } from "./support/http-client";

let server: RunningServer;
beforeAll(() => {
  server = startServer({ port: 0, sizes: { numPages: 48, swapPages: 8, maxBatch: 16 } });
});
afterAll(() => server.stop());

const complete = (body: unknown, signal?: AbortSignal) => postJson(server.url, "/v1/completions", body, signal);
// biome-ignore lint/suspicious/noExplicitAny: JSON from the server
const json = async (r: Response): Promise<any> => r.json();

async function streamed(body: Record<string, unknown>) {
  const response = await complete({ ...body, stream: true });
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toBe("text/event-stream");
  const events = await collectSse(response);
  expect(events.at(-1)!.data).toBe("[DONE]");
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e.data) as CompletionChunk);
  return { events, chunks };
}

describe("POST /v1/completions", () => {
  test("without stream: one text_completion body with the tokens, finish_reason and usage", async () => {
    const r = await complete({ model: "pkv-synthetic", prompt: [1, 2, 3, 4, 5], max_tokens: 6 });
    expect(r.status).toBe(200);
    const body = await json(r);
    expect(body.object).toBe("text_completion");
    expect(body.model).toBe("pkv-synthetic");
    expect(body.id).toMatch(/^cmpl-\d+$/);
    expect(typeof body.created).toBe("number");
    expect(body.choices.length).toBe(1);
    const [choice] = body.choices;
    expect(choice.index).toBe(0);
    expect(choice.finish_reason).toBe("length");
    expect(choice.token_ids.length).toBe(6);
    expect(choice.text).toBe(choice.token_ids.map((t: number) => ` ${t}`).join(""));
    expect(body.usage).toEqual({ prompt_tokens: 5, completion_tokens: 6, total_tokens: 11 });
  });

  test("max_tokens defaults to 16, and a prompt may be a length", async () => {
    const body = await json(await complete({ prompt_length: 30 }));
    expect(body.choices[0].token_ids.length).toBe(16);
    expect(body.usage.prompt_tokens).toBe(30);
  });

  test("with stream: one chunk per token as it is generated, a finish chunk, then [DONE]", async () => {
    const whole = await json(await complete({ prompt: [9, 8, 7], max_tokens: 12 }));
    const { chunks } = await streamed({ prompt: [9, 8, 7], max_tokens: 12 });
    const tokens = chunks.slice(0, -1).map((c) => {
      expect(c.object).toBe("text_completion");
      expect(c.choices[0]!.finish_reason).toBeNull();
      expect(c.choices[0]!.token_ids.length).toBe(1);
      expect(c.choices[0]!.text).toBe(` ${c.choices[0]!.token_ids[0]}`);
      return c.choices[0]!.token_ids[0]!;
    });
    // The synthetic model's tokens depend on (request id, position): another request, other tokens, same count.
    expect(tokens.length).toBe(whole.choices[0].token_ids.length);
    expect(chunks.at(-1)!.choices[0]!.finish_reason).toBe("length");
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
  });

  test("the first chunk arrives while the request is still generating", async () => {
    const response = await complete({ prompt_length: 50, max_tokens: 300, stream: true });
    const events = readSse(response);
    const first = await events.next();
    expect(first.done).toBe(false);
    expect(server.stack.scheduler.running).toBeGreaterThan(0); // still running: the chunk was not buffered to the end
    let count = 1;
    for await (const e of events) if (e.data !== "[DONE]") count++;
    expect(count).toBe(300 + 1); // 300 tokens and the finish chunk
  });

  test("stream_options.include_usage adds a usage chunk with no choices before [DONE]", async () => {
    const { chunks } = await streamed({ prompt: [1, 2], max_tokens: 3, stream_options: { include_usage: true } });
    const usage = chunks.at(-1)!;
    expect(usage.choices).toEqual([]);
    expect(usage.usage).toEqual({ prompt_tokens: 2, completion_tokens: 3, total_tokens: 5 });
    expect(chunks.at(-2)!.choices[0]!.finish_reason).toBe("length");
  });

  test("stop token ids end the completion with finish_reason stop, the stop token last", async () => {
    // Ids are the scheduler's, in order: the next request's is the last one's + 1, and the synthetic
    // model's i-th token depends only on (id, position), so its tokens are known before it runs.
    const last = await json(await complete({ prompt: [4, 4, 4], max_tokens: 1 }));
    const id = Number(last.id.slice("cmpl-".length)) + 1;
    const expected = Array.from({ length: 10 }, (_, i) => server.stack.model.token(id, 3 - 1 + i));
    const at = expected.findIndex((t, i) => i >= 3 && !expected.slice(0, i).includes(t));
    expect(at).toBeGreaterThanOrEqual(3);
    const { chunks } = await streamed({ prompt: [4, 4, 4], max_tokens: 10, stop: [expected[at]!, 31999] });
    expect(chunks[0]!.id).toBe(`cmpl-${id}`);
    const tokens = chunks.slice(0, -1).map((c) => c.choices[0]!.token_ids[0]!);
    expect(tokens).toEqual(expected.slice(0, at + 1));
    expect(chunks.at(-1)!.choices[0]!.finish_reason).toBe("stop");
    // One id alone (not a list) is a stop too: here the first token.
    const nextId = Number(chunks[0]!.id.slice("cmpl-".length)) + 1;
    const one = await json(
      await complete({ prompt: [4, 4, 4], max_tokens: 10, stop: server.stack.model.token(nextId, 2) }),
    );
    expect(one.choices[0].token_ids).toEqual([server.stack.model.token(nextId, 2)]);
    expect(one.choices[0].finish_reason).toBe("stop");
  });

  test("a request too long for the pool is a 400 with code context_length_exceeded", async () => {
    const r = await complete({ prompt_length: 48 * 16, max_tokens: 2 });
    expect(r.status).toBe(400);
    const { error } = await json(r);
    expect(error.type).toBe("invalid_request_error");
    expect(error.code).toBe("context_length_exceeded");
    expect(error.message).toContain("too long for the pool");
  });

  test("a model other than the one served is a 404 model_not_found", async () => {
    const r = await complete({ model: "gpt-4", prompt: [1], max_tokens: 1 });
    expect(r.status).toBe(404);
    const { error } = await json(r);
    expect(error).toMatchObject({ type: "not_found_error", param: "model", code: "model_not_found" });
  });

  const bad: [string, string | Record<string, unknown>, string | null][] = [
    ["not JSON", "{prompt: [1]", null],
    ["an array body", "[1, 2]", null],
    ["no prompt", { max_tokens: 3 }, "prompt"],
    ["both prompt and prompt_length", { prompt: [1], prompt_length: 1 }, "prompt"],
    ["a text prompt (no tokenizer)", { prompt: "hello" }, "prompt"],
    ["an empty prompt", { prompt: [] }, "prompt"],
    ["a negative token id", { prompt: [1, -2] }, "prompt"],
    ["a fractional token id", { prompt: [1, 2.5] }, "prompt"],
    ["nested prompts", { prompt: [[1, 2]] }, "prompt"],
    ["prompt_length 0", { prompt_length: 0 }, "prompt_length"],
    ["prompt_length as a string", { prompt_length: "4" }, "prompt_length"],
    ["max_tokens 0", { prompt: [1], max_tokens: 0 }, "max_tokens"],
    ["max_tokens 1.5", { prompt: [1], max_tokens: 1.5 }, "max_tokens"],
    ["max_tokens as a string", { prompt: [1], max_tokens: "3" }, "max_tokens"],
    ["a text stop", { prompt: [1], stop: "\n" }, "stop"],
    ["a stop list with text", { prompt: [1], stop: [1, "x"] }, "stop"],
    ["stream as a string", { prompt: [1], stream: "true" }, "stream"],
    ["stream_options without stream", { prompt: [1], stream_options: { include_usage: true } }, "stream_options"],
    ["an unknown stream option", { prompt: [1], stream: true, stream_options: { x: 1 } }, "stream_options.x"],
    [
      "include_usage not a boolean",
      { prompt: [1], stream: true, stream_options: { include_usage: 1 } },
      "stream_options.include_usage",
    ],
    ["model as a number", { prompt: [1], model: 5 }, "model"],
    ["an unknown field", { prompt: [1], temperature: 0.7 }, "temperature"],
    ["a misspelt field", { prompt: [1], max_token: 4 }, "max_token"],
    ["a token id past int32", { prompt: [1, 2 ** 31] }, null],
  ];
  for (const [what, body, param] of bad)
    test(`${what} is a 400 with an OpenAI-style error${param ? ` naming ${param}` : ""}`, async () => {
      const used = server.stack.cache.stats().pagesUsed;
      const r = await complete(body);
      expect(r.status).toBe(400);
      const { error } = await json(r);
      expect(error.type).toBe("invalid_request_error");
      expect(typeof error.message).toBe("string");
      expect(error.message.length).toBeGreaterThan(10);
      expect(error.param).toBe(param);
      expect(error).toHaveProperty("code");
      expect(server.stack.cache.stats().pagesUsed).toBe(used);
    });

  test("a body longer than any prompt the pool could hold is refused before it is read", async () => {
    const r = await complete({ prompt: Array.from({ length: 48 * 16 * 2 }, () => 1234567890) });
    expect(r.status).toBe(400);
    expect((await json(r)).error.code).toBe("body_too_long");
  });
});

describe("the other routes", () => {
  test("GET /v1/models lists the served model with its context length", async () => {
    const body = await json(await fetch(new URL("/v1/models", server.url)));
    expect(body.object).toBe("list");
    expect(body.data).toEqual([
      {
        id: "pkv-synthetic",
        object: "model",
        created: expect.any(Number),
        owned_by: "persistentkv",
        max_model_len: 48 * 16,
      },
    ]);
  });

  test("GET /health is 200 ok while serving", async () => {
    const r = await fetch(new URL("/health", server.url));
    expect(r.status).toBe(200);
    expect(await json(r)).toEqual({ status: "ok" });
  });

  test("unknown routes are 404 and wrong methods 405, with error bodies", async () => {
    const missing = await fetch(new URL("/v1/chat/completions", server.url), { method: "POST", body: "{}" });
    expect(missing.status).toBe(404);
    expect((await json(missing)).error.type).toBe("not_found_error");
    for (const [path, init] of [
      ["/v1/completions", { method: "GET" }],
      ["/v1/models", { method: "POST", body: "{}" }],
      ["/health", { method: "DELETE" }],
      ["/metrics", { method: "PUT", body: "" }],
    ] as const) {
      const r = await fetch(new URL(path, server.url), init);
      expect(r.status, path).toBe(405);
      expect((await json(r)).error.code).toBe("method_not_allowed");
    }
  });

  test("server options that make no sense are refused with a typed error before anything opens", () => {
    for (const options of [{ keepAliveMs: 0 }, { keepAliveMs: -5 }, { keepAliveMs: Number.NaN }, { modelId: "" }])
      expect(() => startServer({ port: 0, ...options }), JSON.stringify(options)).toThrow(InvalidArgumentError);
    expect(() => startServer({ port: 0, keepAliveMs: "5" as never })).toThrow(/keepAliveMs "5"/);
  });

  test("the legacy POST /generate still streams named events", async () => {
    const r = await postJson(server.url, "/generate", { promptLength: 10, maxTokens: 3 });
    const events = await collectSse(r);
    expect(events.map((e) => e.event)).toEqual(["token", "token", "token", "done"]);
    expect(JSON.parse(events.at(-1)!.data).finishReason).toBe("length");
  });
});
