// The scheduler under load on the CPU backend, with the real KV cache and decode engine and the
// synthetic model: every request completes with its token count, pages are never leaked, preemption by
// swap and by recompute both happen and resume with K/V identical to an unpreempted run, admission is
// FCFS, and a request that can never fit gets a typed error while the loop keeps serving the others.
import { afterAll, describe, expect, test } from "bun:test";
import { DecodeEngine } from "../lib/engine";
import { InvalidArgumentError, OutOfPagesError } from "../lib/errors";
import { KVCache, type Sequence } from "../lib/kvcache";
import { openRuntime } from "../lib/runtime";
import { RequestTooLargeError, type RequestSpec, Scheduler, StepFailedError } from "../lib/scheduler";
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
  const rand = (n: number) => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) % n);
  const system = Array.from({ length: 10 }, (_, i) => 500 + i);
  return Array.from({ length: count }, (_, id) => {
    const length = 2 + rand(30);
    const maxTokens = 1 + rand(24);
    if (id % 3 === 0) return { id, prompt: [...system, ...Array.from({ length }, (_, i) => 10_000 * id + i)], maxTokens };
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
    for (let i = 0; i < 12; i++) scheduler.step();
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
    scheduler.step();
    failNext = true;
    scheduler.step();
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
