// A request's life: stop token ids end it ("stop"), an AbortSignal cancels it wherever it is
// ("cancelled"), maxTokens ends it ("length"), a failed step fails it ("error", through `settled`), and
// its time to first token and inter-token latencies are measured per request and in the totals.
import { afterAll, describe, expect, spyOn, test } from "bun:test";
import { DecodeEngine } from "../lib/engine";
import { InvalidArgumentError } from "../lib/errors";
import { KVCache, type Sequence } from "../lib/kvcache";
import { openRuntime } from "../lib/runtime";
import {
  type ActiveRequest,
  HostStepRunner,
  LATENCY_BUCKETS_MS,
  LatencyHistogram,
  type RequestResult,
  Scheduler,
  StepFailedError,
  type StepReport,
  type StepRunner,
} from "../lib/scheduler";
import { SyntheticModel } from "../lib/scheduler/synthetic";

const rt = openRuntime({ backend: "cpu" });
afterAll(() => rt.dispose());

const SHAPE = { numLayers: 2, numQoHeads: 4, numKvHeads: 2, headDim: 64, pageSize: 4 };
const NUM_PAGES = 64;

function stack(options: { delayMs?: number; failDecode?: () => boolean } = {}) {
  const cache = new KVCache(rt, { ...SHAPE, numPages: NUM_PAGES, dtype: "f16", maxSequences: 32 });
  const engine = new DecodeEngine(rt, { ...SHAPE, dtype: "f16", maxBatch: 8 });
  const model = new SyntheticModel({ ...SHAPE, dtype: "f16" });
  const host = new HostStepRunner({
    cache,
    engine,
    model,
    shape: { ...SHAPE, numPages: NUM_PAGES, maxPagesPerSequence: NUM_PAGES },
    maxBatch: 8,
  });
  // The host runner, after `delayMs` of pretend GPU work; or failing when failDecode says so.
  const runner: StepRunner<Sequence> = {
    maxBatch: 8,
    prefill: (...args) => host.prefill(...args),
    async decode(batch: readonly ActiveRequest[], sequences: readonly Sequence[], slots: Int32Array) {
      if (options.failDecode?.()) throw new Error("device lost");
      const result = await host.decode(batch, sequences, slots);
      if (options.delayMs) await Bun.sleep(options.delayMs);
      return result;
    },
  };
  const scheduler = new Scheduler({ cache, runner });
  const dispose = () => {
    engine.dispose();
    cache.dispose();
  };
  return { cache, model, scheduler, dispose };
}

const pagesUsed = (cache: KVCache) => cache.stats().pagesUsed;

describe("stop tokens", () => {
  test("a generated stop token ends the request with finishReason stop; it is the last token delivered", async () => {
    const a = stack();
    const reference = a.scheduler.submit({ id: 3, prompt: [1, 2, 3, 4, 5], maxTokens: 8 });
    await a.scheduler.run({ untilIdle: true });
    const full = await reference.done;
    expect(full.finishReason).toBe("length");
    // The first token that has not come before it: the request must stop there, not earlier.
    const at = full.tokens.findIndex((t, i) => i >= 2 && !full.tokens.slice(0, i).includes(t));
    expect(at).toBeGreaterThanOrEqual(2);
    a.dispose();

    const b = stack();
    const handle = b.scheduler.submit({
      id: 3,
      prompt: [1, 2, 3, 4, 5],
      maxTokens: 8,
      stop: [full.tokens[at]!, 31999],
    });
    const streamed: number[] = [];
    const reading = (async () => {
      for await (const event of handle) streamed.push(event.token);
    })();
    await b.scheduler.run({ untilIdle: true });
    await reading;
    const result = await handle.done;
    expect(result.finishReason).toBe("stop");
    expect(result.outcome).toBe("finished");
    expect(handle.finishReason).toBe("stop");
    expect(result.tokens).toEqual(full.tokens.slice(0, at + 1));
    expect(streamed).toEqual(result.tokens);
    expect(b.scheduler.totals.stopped).toBe(1);
    expect(b.scheduler.totals.finished).toBe(1);
    expect(pagesUsed(b.cache)).toBe(0);
    b.dispose();
  });

  test("stop ids are checked like prompt ids", () => {
    const s = stack();
    for (const stop of [[-1], [1.5], [2 ** 31], ["7"], 5, "x", null])
      expect(() => s.scheduler.submit({ promptLength: 3, maxTokens: 2, stop: stop as never })).toThrow(
        InvalidArgumentError,
      );
    expect(() => s.scheduler.submit({ promptLength: 3, maxTokens: 2, stop: [32000] })).not.toThrow(); // no vocab given
    expect(s.scheduler.waiting).toBe(1);
    s.dispose();
  });
});

describe("AbortSignal", () => {
  test("aborting cancels a request waiting, running, or already aborted at submit; pages are freed", async () => {
    const s = stack();
    const running = new AbortController();
    const waiting = new AbortController();
    const a = s.scheduler.submit({ promptLength: 8, maxTokens: 40, signal: running.signal });
    await s.scheduler.step();
    expect(s.scheduler.running).toBe(1);
    expect(pagesUsed(s.cache)).toBeGreaterThan(0);
    const b = s.scheduler.submit({ promptLength: 8, maxTokens: 40, signal: waiting.signal });
    expect(s.scheduler.waiting).toBe(1);
    waiting.abort();
    running.abort();
    const pre = AbortSignal.abort();
    const c = s.scheduler.submit({ promptLength: 8, maxTokens: 4, signal: pre });
    for (const h of [a, b, c]) {
      const result = await h.done;
      expect(result.finishReason).toBe("cancelled");
      expect(result.outcome).toBe("cancelled");
    }
    expect((await a.done).tokens.length).toBe(1);
    expect((await b.done).tokens.length).toBe(0);
    expect(s.scheduler.busy).toBe(false);
    expect(s.scheduler.totals.cancelled).toBe(3);
    expect(pagesUsed(s.cache)).toBe(0);
    expect(() => s.scheduler.submit({ promptLength: 3, maxTokens: 2, signal: {} as AbortSignal })).toThrow(
      /not an AbortSignal/,
    );
    s.dispose();
  });

  test("an abort after the request finished changes nothing (the listener is gone)", async () => {
    const s = stack();
    const controller = new AbortController();
    const removed = spyOn(controller.signal, "removeEventListener");
    const handle = s.scheduler.submit({ promptLength: 4, maxTokens: 2, signal: controller.signal });
    await s.scheduler.run({ untilIdle: true });
    expect((await handle.done).finishReason).toBe("length");
    expect(removed).toHaveBeenCalledTimes(1);
    expect(removed.mock.calls[0]![0]).toBe("abort");
    controller.abort();
    expect(s.scheduler.totals.cancelled).toBe(0);
    expect(handle.finishReason).toBe("length");
    s.dispose();
  });
});

describe("finishReason error", () => {
  test("a failed step rejects done with the typed error; settled resolves with finishReason error", async () => {
    let fail = false;
    const s = stack({ failDecode: () => fail });
    const handle = s.scheduler.submit({ promptLength: 4, maxTokens: 5 });
    await s.scheduler.step();
    fail = true;
    const report = await s.scheduler.step();
    expect(report.error).toBeInstanceOf(StepFailedError);
    const error = await handle.done.catch((e) => e);
    expect(error).toBe(report.error);
    const settled: RequestResult = await handle.settled;
    expect(settled.finishReason).toBe("error");
    expect(settled.outcome).toBe("failed");
    expect(settled.error).toBe(error);
    expect(settled.tokens.length).toBe(1);
    expect(handle.finishReason).toBe("error");
    const tooLarge = s.scheduler.submit({ promptLength: NUM_PAGES * 4, maxTokens: 2 });
    expect((await tooLarge.settled).finishReason).toBe("error");
    expect(pagesUsed(s.cache)).toBe(0);
    s.dispose();
  });
});

describe("time to first token and inter-token latency", () => {
  test("are measured per request from submit, and land in the step reports and the totals' histograms", async () => {
    const DELAY = 15;
    const s = stack({ delayMs: DELAY });
    const reports: StepReport[] = [];
    s.scheduler.onStep((r) => reports.push(r));
    const handles = [3, 5, 2].map((maxTokens) => s.scheduler.submit({ promptLength: 6, maxTokens }));
    await s.scheduler.run({ untilIdle: true });
    const results = await Promise.all(handles.map((h) => h.done));
    for (const r of results) {
      expect(r.ttftMs).toBeGreaterThanOrEqual(DELAY - 1); // one step of pretend GPU work at least
      expect(r.itlMs.length).toBe(r.tokens.length - 1);
      for (const gap of r.itlMs) expect(gap).toBeGreaterThanOrEqual(DELAY - 1);
      expect(r.latencyMs).toBeGreaterThanOrEqual(r.ttftMs! + r.itlMs.reduce((a, b) => a + b, 0) - 1);
    }
    const t = s.scheduler.totals;
    expect(t.ttft.count).toBe(3);
    expect(t.itl.count).toBe(2 + 4 + 1);
    expect(t.stepTime.count).toBe(reports.filter((r) => r.batch > 0).length);
    expect(reports.flatMap((r) => r.ttftMs).sort()).toEqual(results.map((r) => r.ttftMs!).sort());
    expect(reports.flatMap((r) => r.itlMs).length).toBe(t.itl.count);
    const sum = results.flatMap((r) => r.itlMs).reduce((a, b) => a + b, 0);
    expect(t.itl.sumMs).toBeCloseTo(sum, 6);
    expect(t.itl.cumulative().at(-1)).toBe(t.itl.count);
    // Nothing at or below 10 ms: every gap held a 15 ms step.
    expect(t.itl.cumulative()[LATENCY_BUCKETS_MS.indexOf(10)]).toBe(0);
    s.dispose();
  });

  test("a histogram bucket holds values up to and including its bound", () => {
    const h = new LatencyHistogram([1, 10]);
    for (const ms of [0.5, 1, 1.01, 10, 11]) h.observe(ms);
    expect(h.counts).toEqual([2, 2, 1]);
    expect(h.cumulative()).toEqual([2, 4, 5]);
    expect(h.count).toBe(5);
    expect(h.sumMs).toBeCloseTo(23.51, 10);
  });
});
