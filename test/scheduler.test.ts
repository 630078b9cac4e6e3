// The scheduler under load on the CPU backend, with the real KV cache and decode engine and the
// synthetic model: every request completes with its token count, pages are never leaked, preemption by
// swap and by recompute both happen and resume with K/V identical to an unpreempted run, admission is
// FCFS, and a request that can never fit gets a typed error while the loop keeps serving the others.
import { afterAll, describe, expect, test } from "bun:test";
import { DecodeEngine } from "../lib/engine";
import { InvalidArgumentError, OutOfPagesError } from "../lib/errors";
import { KVCache, type Sequence } from "../lib/kvcache";
import { openRuntime } from "../lib/runtime";
import {
  ModelOutputError,
  RequestTooLargeError,
  type RequestSpec,
  Scheduler,
  type StepReport,
  StepFailedError,
} from "../lib/scheduler";
import { SyntheticModel } from "../lib/scheduler/synthetic";

const rt = openRuntime({ backend: "cpu" });
afterAll(() => rt.dispose());

const SHAPE = { numLayers: 2, numQoHeads: 4, numKvHeads: 2, headDim: 64, pageSize: 4 };

function makeScheduler(numPages: number, swapPages: number, maxBatch = 16) {
  const cache = new KVCache(rt, { ...SHAPE, numPages, dtype: "f16", swapPages, maxSequences: 64 });
  const engine = new DecodeEngine(rt, { ...SHAPE, dtype: "f16", policy: "adaptive", maxBatch });
  const model = new SyntheticModel({ ...SHAPE, dtype: "f16" });
  const scheduler = new Scheduler({ cache, engine, model, maxBatch }); // sizes from cache.config and the engine
  // K and V of every finished request, per layer, read just before its pages are released.
  const kv = new Map<number, { k: Uint16Array; v: Uint16Array }[]>();
  scheduler.onRetire((request, seq: Sequence) => {
    kv.set(
      request.id,
      Array.from({ length: SHAPE.numLayers }, (_, layer) => cache.readKV(layer, seq)),
    );
  });
  const dispose = () => {
    engine.dispose();
    cache.dispose();
  };
  return { cache, scheduler, kv, dispose };
}

/** A seeded random load: a third share a 10-token system prompt (prefix hits), some only give a length. */
function randomLoad(count: number, seed: number): RequestSpec[] {
  let s = seed;
  const rand = (n: number) => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s % n;
  };
  const system = Array.from({ length: 10 }, (_, i) => 500 + i);
  return Array.from({ length: count }, (_, id) => {
    const length = 2 + rand(30);
    const maxTokens = 1 + rand(24);
    if (id % 3 === 0)
      return { id, prompt: [...system, ...Array.from({ length }, (_, i) => 10_000 * id + i)], maxTokens };
    if (id % 3 === 1) return { id, prompt: Array.from({ length }, (_, i) => 10_000 * id + i), maxTokens };
    return { id, promptLength: length, maxTokens };
  });
}

function expectNoLeak(cache: KVCache): void {
  const s = cache.stats();
  expect(s.pagesUsed).toBe(0);
  expect(s.swapSlotsUsed).toBe(0);
  expect(s.pagesSwapped).toBe(0);
  // Cached prefix pages are the only pages not free, and every one of them can be evicted.
  expect(s.pagesFree + s.pagesCached).toBe(s.pagesTotal);
  expect(cache.snapshot().cachedPages.length).toBe(s.pagesCached);
}

describe("Scheduler on the CPU backend", () => {
  const load = randomLoad(60, 7);
  // Reference: a pool big enough that nothing is ever preempted.
  const reference = makeScheduler(1024, 0, 64);
  let referenceTotals = reference.scheduler.totals;

  test("an unpreempted run completes every request with exactly its token count", async () => {
    const handles = load.map((spec) => reference.scheduler.submit(spec));
    await reference.scheduler.run({ untilIdle: true });
    const results = await Promise.all(handles.map((h) => h.done));
    results.forEach((r, i) => {
      expect(r.outcome).toBe("finished");
      expect(r.tokens.length).toBe(load[i]!.maxTokens);
      expect(r.preemptions).toBe(0);
    });
    referenceTotals = reference.scheduler.totals;
    expect(referenceTotals.preemptedBySwap + referenceTotals.preemptedByRecompute).toBe(0);
    expectNoLeak(reference.cache);
  });

  test("under page pressure both swap and recompute preemption happen, and resume with identical K/V", async () => {
    // 40 pages of 4 tokens for up to 16 running requests of up to 64 tokens each. 6 swap pages hold
    // the smaller victims; larger ones, or any once swap is full, are recomputed.
    const tight = makeScheduler(40, 6, 16);
    const tokensSeen = new Map<number, number[]>();
    const handles = load.map((spec) => tight.scheduler.submit(spec));
    const streams = handles.map(async (h) => {
      const tokens: number[] = [];
      for await (const event of h) {
        expect(event.index).toBe(tokens.length);
        tokens.push(event.token);
      }
      tokensSeen.set(h.id, tokens);
    });
    await tight.scheduler.run({ untilIdle: true });
    await Promise.all(streams);
    const results = await Promise.all(handles.map((h) => h.done));
    const totals = tight.scheduler.totals;
    expect(totals.preemptedBySwap).toBeGreaterThan(0);
    expect(totals.preemptedByRecompute).toBeGreaterThan(0);
    expect(totals.swapIns).toBe(totals.preemptedBySwap);
    expect(totals.prefixHitTokens).toBeGreaterThan(0); // later arrivals reuse the system prompt's pages
    expect(totals.finished).toBe(load.length);
    expect(totals.generatedTokens).toBe(referenceTotals.generatedTokens);

    const swapped = results.filter((r) => r.swaps > 0);
    const recomputed = results.filter((r) => r.preemptions > r.swaps);
    expect(swapped.length).toBeGreaterThan(0);
    expect(recomputed.length).toBeGreaterThan(0);
    for (const r of results) {
      expect(r.tokens.length).toBe(load[r.id]!.maxTokens);
      expect(tokensSeen.get(r.id)).toEqual(r.tokens);
      const got = tight.kv.get(r.id)!;
      const want = reference.kv.get(r.id)!;
      for (let layer = 0; layer < SHAPE.numLayers; layer++) {
        expect(got[layer]!.k.length).toBe(want[layer]!.k.length);
        expect(Buffer.compare(Buffer.from(got[layer]!.k.buffer), Buffer.from(want[layer]!.k.buffer))).toBe(0);
        expect(Buffer.compare(Buffer.from(got[layer]!.v.buffer), Buffer.from(want[layer]!.v.buffer))).toBe(0);
      }
    }
    expectNoLeak(tight.cache);
    tight.dispose();
  });

  test("admission is FCFS: a head that does not fit yet blocks later, smaller requests", async () => {
    const { scheduler, cache, dispose } = makeScheduler(24, 0, 16);
    const firstStep = new Map<number, number>();
    const specs: RequestSpec[] = [
      { id: 0, promptLength: 40, maxTokens: 20 }, // 15 of 24 pages by its end
      { id: 1, promptLength: 60, maxTokens: 4 }, // 16 pages: must wait for request 0
      { id: 2, promptLength: 3, maxTokens: 4 }, // would fit beside 0, but arrived after 1
      { id: 3, promptLength: 3, maxTokens: 4 },
    ];
    const handles = specs.map((spec) => scheduler.submit(spec));
    const streams = handles.map(async (h) => {
      for await (const event of h) if (event.index === 0) firstStep.set(h.id, event.step);
    });
    await scheduler.run({ untilIdle: true });
    await Promise.all(streams);
    const steps = specs.map((s) => firstStep.get(s.id!)!);
    for (let i = 1; i < steps.length; i++) expect(steps[i]!).toBeGreaterThanOrEqual(steps[i - 1]!);
    expect(steps[1]!).toBeGreaterThan(steps[0]!); // request 1 really had to wait
    expectNoLeak(cache);
    dispose();
  });

  test("a request that can never fit gets RequestTooLargeError; the others still finish", async () => {
    const { scheduler, cache, dispose } = makeScheduler(16, 0);
    const small = scheduler.submit({ promptLength: 5, maxTokens: 3 });
    const huge = scheduler.submit({ promptLength: 60, maxTokens: 10 }); // 69 tokens: 18 pages > 16
    const after = scheduler.submit({ prompt: [1, 2, 3], maxTokens: 2 });
    await scheduler.run({ untilIdle: true });
    const error = await huge.done.catch((e) => e);
    expect(error).toBeInstanceOf(RequestTooLargeError);
    expect(error.message).toContain("18 pages");
    expect((await small.done).tokens.length).toBe(3);
    expect((await after.done).tokens.length).toBe(2);
    expect(scheduler.totals.failed).toBe(1);
    expect(() => scheduler.submit({ promptLength: 0, maxTokens: 1 })).toThrow(InvalidArgumentError);
    expect(() => scheduler.submit({ prompt: [1], promptLength: 1, maxTokens: 1 })).toThrow(InvalidArgumentError);
    expectNoLeak(cache);
    dispose();
  });

  test("cancel frees the pages of waiting, running and swapped requests", async () => {
    const { scheduler, cache, dispose } = makeScheduler(20, 8, 8);
    const handles = Array.from({ length: 6 }, (_, i) => scheduler.submit({ promptLength: 20, maxTokens: 30 + i }));
    for (let i = 0; i < 12; i++) await scheduler.step();
    expect(scheduler.running).toBeGreaterThan(0);
    expect(scheduler.swapped + scheduler.waiting).toBeGreaterThan(0);
    for (const h of handles) h.cancel();
    const results = await Promise.all(handles.map((h) => h.done));
    expect(results.every((r) => r.outcome === "cancelled")).toBe(true);
    expect(scheduler.busy).toBe(false);
    expect(scheduler.totals.cancelled).toBe(6);
    expectNoLeak(cache);
    dispose();
  });

  test("a model that throws fails that step's requests with StepFailedError and the loop goes on", async () => {
    const cache = new KVCache(rt, { ...SHAPE, numPages: 64, dtype: "f16" });
    const engine = new DecodeEngine(rt, { ...SHAPE, dtype: "f16", maxBatch: 8 });
    const model = new SyntheticModel({ ...SHAPE, dtype: "f16" });
    let failNext = false;
    const flaky = {
      prefill: model.prefill.bind(model),
      sample: model.sample.bind(model),
      forward(...args: Parameters<SyntheticModel["forward"]>) {
        if (failNext) {
          failNext = false;
          throw new Error("model blew up");
        }
        model.forward(...args);
      },
    };
    const scheduler = new Scheduler({ cache, engine, model: flaky, shape: { ...SHAPE, numPages: 64 }, maxBatch: 8 });
    const doomed = scheduler.submit({ promptLength: 5, maxTokens: 5 });
    await scheduler.step();
    failNext = true;
    await scheduler.step();
    const error = await doomed.done.catch((e) => e);
    expect(error).toBeInstanceOf(StepFailedError);
    expect(error.message).toContain("model blew up");
    const fine = scheduler.submit({ promptLength: 5, maxTokens: 2 });
    await scheduler.run({ untilIdle: true });
    expect((await fine.done).tokens.length).toBe(2);
    expectNoLeak(cache);
    engine.dispose();
    cache.dispose();
  });

  afterAll(() => reference.dispose());
});

describe("Scheduler with pages held outside it", () => {
  test("a head that cannot fit even with nothing running fails with OutOfPagesError instead of stalling the queue", async () => {
    const cache = new KVCache(rt, { ...SHAPE, numPages: 16, dtype: "f16" });
    const engine = new DecodeEngine(rt, { ...SHAPE, dtype: "f16", maxBatch: 4 });
    const scheduler = new Scheduler({ cache, engine, model: new SyntheticModel({ ...SHAPE, dtype: "f16" }) });
    const outside = cache.createSequence();
    cache.append(outside, 40); // 10 of 16 pages held by someone else
    const blocked = scheduler.submit({ promptLength: 30, maxTokens: 4 }); // 9 pages: fits the pool, not the rest
    const next = scheduler.submit({ promptLength: 8, maxTokens: 4 });
    await scheduler.run({ untilIdle: true });
    const error = await blocked.done.catch((e) => e);
    expect(error).toBeInstanceOf(OutOfPagesError);
    expect(error.message).toContain("even with nothing running");
    expect((await next.done).tokens.length).toBe(4);
    cache.release(outside);
    expectNoLeak(cache);
    engine.dispose();
    cache.dispose();
  });
});

describe("Scheduler checks the model's outputs", () => {
  function withSample(sample: (rows: number, good: number[]) => unknown) {
    const cache = new KVCache(rt, { ...SHAPE, numPages: 64, dtype: "f16" });
    const engine = new DecodeEngine(rt, { ...SHAPE, dtype: "f16", maxBatch: 8 });
    const model = new SyntheticModel({ ...SHAPE, dtype: "f16" });
    let bad = false;
    const faulty = {
      prefill: model.prefill.bind(model),
      forward: model.forward.bind(model),
      sample(batch: Parameters<SyntheticModel["sample"]>[0], out: Uint16Array) {
        const good = model.sample(batch, out);
        return (bad ? sample(batch.length, good) : good) as number[];
      },
    };
    const scheduler = new Scheduler({ cache, engine, model: faulty, maxBatch: 8 });
    return { cache, engine, scheduler, breakNext: () => (bad = true), heal: () => (bad = false) };
  }

  const outputs: [string, (rows: number, good: number[]) => unknown, RegExp][] = [
    ["too few tokens", (_, good) => good.slice(1), /returned 2 tokens for a batch of 3/],
    ["too many tokens", (_, good) => [...good, 5], /returned 4 tokens for a batch of 3/],
    ["an empty result", () => [], /returned 0 tokens/],
    ["a fractional token", (_, good) => [good[0], 2.5, good[2]], /returned 2.5 for row 1/],
    ["a negative token", (_, good) => [good[0], good[1], -1], /returned -1 for row 2/],
    ["NaN", (_, good) => [Number.NaN, good[1], good[2]], /returned NaN for row 0/],
    ["undefined in a row", (_, good) => [good[0], undefined, good[2]], /returned undefined for row 1/],
    ["a token past int32", (_, good) => [2 ** 31, good[1], good[2]], /for row 0/],
    ["a string token", (_, good) => ["7", good[1], good[2]], /returned "7" for row 0/],
    ["null", () => null, /returned null/],
    ["a number", () => 3, /returned 3/],
  ];
  for (const [what, sample, message] of outputs)
    test(`sample() returning ${what} fails the step with ModelOutputError; no request takes a token`, async () => {
      const { cache, engine, scheduler, breakNext, heal } = withSample(sample);
      const handles = [0, 1, 2].map((i) => scheduler.submit({ promptLength: 3 + i, maxTokens: 4 }));
      const seen: number[][] = [[], [], []];
      handles.forEach(
        (h, i) =>
          void (async () => {
            for await (const e of h) seen[i]!.push(e.token);
          })().catch(() => {}),
      );
      const first = await scheduler.step();
      expect(first.error).toBeNull();
      breakNext();
      const report: StepReport = await scheduler.step();
      expect(report.error).toBeInstanceOf(ModelOutputError);
      expect(report.error).toBeInstanceOf(StepFailedError);
      expect(report.error!.message).toMatch(message);
      expect(report.failed).toBe(3);
      for (const h of handles) {
        const error = await h.done.catch((e) => e);
        expect(error).toBe(report.error); // the same typed error, to every request of the step
      }
      await Bun.sleep(0);
      for (const tokens of seen) {
        expect(tokens.length).toBe(1); // the first step's token only
        expect(tokens.every((t) => Number.isInteger(t) && t >= 0)).toBe(true);
      }
      heal();
      const after = scheduler.submit({ promptLength: 5, maxTokens: 3 });
      await scheduler.run({ untilIdle: true });
      expect((await after.done).tokens.length).toBe(3);
      expectNoLeak(cache);
      engine.dispose();
      cache.dispose();
    });

  test("a model's vocab and maxContext bound prompts, sampled tokens and request sizes", async () => {
    const cache = new KVCache(rt, { ...SHAPE, numPages: 64, dtype: "f16" });
    const engine = new DecodeEngine(rt, { ...SHAPE, dtype: "f16", maxBatch: 8 });
    const synthetic = new SyntheticModel({ ...SHAPE, dtype: "f16", vocab: 1000 });
    const model = {
      prefill: synthetic.prefill.bind(synthetic),
      forward: synthetic.forward.bind(synthetic),
      sample: (batch: Parameters<SyntheticModel["sample"]>[0]) => batch.map(() => 999 + batch.length), // 1000 for one row: past vocab
      vocab: 1000,
      maxContext: 40,
    };
    const scheduler = new Scheduler({ cache, engine, model });
    expect(() => scheduler.submit({ prompt: [1, 1000], maxTokens: 2 })).toThrow(/prompt\[1\] = 1000/);
    const long = scheduler.submit({ promptLength: 30, maxTokens: 12 }); // 41 tokens at its end
    expect(long.error).toBeInstanceOf(RequestTooLargeError);
    expect(long.error!.message).toContain("the model takes at most 40");
    const one = scheduler.submit({ prompt: [1, 2, 999], maxTokens: 2 });
    const report = await scheduler.step();
    expect(report.error).toBeInstanceOf(ModelOutputError);
    expect(await one.done.catch((e) => e)).toBe(report.error);
    expectNoLeak(cache);
    expect(() => new Scheduler({ cache, engine, model: { ...model, vocab: 0 } })).toThrow(InvalidArgumentError);
    expect(() => new Scheduler({ cache, engine, model: { ...model, maxContext: 1.5 } })).toThrow(InvalidArgumentError);
    engine.dispose();
    cache.dispose();
  });
});

describe("Scheduler sizes a request before allocating for it", () => {
  test("a prompt of 3e7 (or 2^50) placeholder tokens fails at once with RequestTooLargeError, in O(1)", async () => {
    const { scheduler, cache, dispose } = makeScheduler(16, 0);
    const started = performance.now();
    const handle = scheduler.submit({ promptLength: 3e7, maxTokens: 1 });
    expect(performance.now() - started).toBeLessThan(50); // building its token list took ~200 ms
    expect(handle.error).toBeInstanceOf(RequestTooLargeError);
    expect(handle.error!.message).toContain("too long for the pool");
    // 2^50 tokens could never be allocated: only a check that comes first can answer.
    const impossible = scheduler.submit({ promptLength: 2 ** 50, maxTokens: 1 });
    expect(impossible.error).toBeInstanceOf(RequestTooLargeError);
    expect(await handle.done.catch((e) => e)).toBe(handle.error);
    expect(scheduler.busy).toBe(false);
    expect(scheduler.totals.failed).toBe(2);
    // A prompt of ids too long for the pool is refused before its ids are read.
    let read = 0;
    const prompt = new Proxy([] as number[], {
      get: (target, key) => {
        if (key === "length") return 1e6;
        if (typeof key === "string" && /^\d+$/.test(key)) {
          read++;
          return 1;
        }
        return Reflect.get(target, key);
      },
    });
    expect(scheduler.submit({ prompt, maxTokens: 1 }).error).toBeInstanceOf(RequestTooLargeError);
    expect(read).toBe(0);
    expectNoLeak(cache);
    dispose();
  });

  test("lengths that are not integers are InvalidArgumentError, 1e308 included (it was a RangeError)", () => {
    const { scheduler, dispose } = makeScheduler(16, 0);
    for (const promptLength of [1e308, 2.5, -3, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53])
      expect(() => scheduler.submit({ promptLength, maxTokens: 2 })).toThrow(InvalidArgumentError);
    for (const maxTokens of [1e308, 0.5, -1, Number.NaN])
      expect(() => scheduler.submit({ promptLength: 4, maxTokens })).toThrow(InvalidArgumentError);
    expect(scheduler.busy).toBe(false);
    dispose();
  });

  test("options are checked: maxBatch within the engine's, a watermark within the pool", () => {
    const cache = new KVCache(rt, { ...SHAPE, numPages: 16, dtype: "f16" });
    const engine = new DecodeEngine(rt, { ...SHAPE, dtype: "f16", maxBatch: 4 });
    const model = new SyntheticModel({ ...SHAPE, dtype: "f16" });
    expect(() => new Scheduler({ cache, engine, model, maxBatch: 5 })).toThrow(
      /maxBatch 5 is not an integer in 1\.\.4/,
    );
    expect(() => new Scheduler({ cache, engine, model, watermarkPages: 1.5 })).toThrow(InvalidArgumentError);
    expect(() => new Scheduler({ cache, engine, model: {} as SyntheticModel })).toThrow(/no prefill\(\) method/);
    expect(new Scheduler({ cache, engine, model }).running).toBe(0);
    engine.dispose();
    cache.dispose();
  });
});
