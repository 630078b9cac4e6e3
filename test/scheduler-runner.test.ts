// The Scheduler over a StepRunner: a runner given directly serves exactly like the engine-and-model
// form, the host runner reuses its arrays, step() awaits the runner's work without blocking the event
// loop, a cancel during a step frees pages only once the step is done, and `await using` closes it.
import { afterAll, describe, expect, test } from "bun:test";
import { DecodeEngine } from "../lib/engine";
import { BadStateError, InvalidArgumentError } from "../lib/errors";
import { KVCache, type Sequence } from "../lib/kvcache";
import { openRuntime } from "../lib/runtime";
import { type ActiveRequest, type DecodeResult, HostStepRunner, Scheduler, type StepRunner } from "../lib/scheduler";
import { createDemoStack, sizesFor } from "../lib/scheduler/demo";
import { SyntheticModel } from "../lib/scheduler/synthetic";
import { hookedHostRunner } from "./support/runners";

const rt = openRuntime({ backend: "cpu" });
afterAll(() => rt.dispose());

const SHAPE = { numLayers: 2, numQoHeads: 4, numKvHeads: 2, headDim: 64, pageSize: 4 };
const NUM_PAGES = 64;

function parts(maxBatch = 8) {
  const cache = new KVCache(rt, { ...SHAPE, numPages: NUM_PAGES, dtype: "f16", maxSequences: 32 });
  const engine = new DecodeEngine(rt, { ...SHAPE, dtype: "f16", maxBatch });
  const model = new SyntheticModel({ ...SHAPE, dtype: "f16" });
  const hostRunner = () =>
    new HostStepRunner({
      cache,
      engine,
      model,
      shape: { ...SHAPE, numPages: NUM_PAGES, maxPagesPerSequence: NUM_PAGES },
      maxBatch,
    });
  const dispose = () => {
    engine.dispose();
    cache.dispose();
  };
  return { cache, engine, model, hostRunner, dispose };
}

/** A runner that delegates to another after `delayMs` of "GPU work" (a timer: the event loop is free). */
function slowRunner(inner: StepRunner<Sequence>, delayMs: number): StepRunner<Sequence> & { steps: number } {
  return {
    steps: 0,
    prefill: (request, seq, slots, from, to) => inner.prefill(request, seq, slots, from, to),
    async decode(
      batch: readonly ActiveRequest[],
      sequences: readonly Sequence[],
      slots: Int32Array,
    ): Promise<DecodeResult> {
      this.steps++;
      const result = await inner.decode(batch, sequences, slots);
      await Bun.sleep(delayMs);
      return result;
    },
    maxBatch: inner.maxBatch,
  };
}

const SPECS = [
  { id: 0, prompt: [5, 6, 7, 8, 9], maxTokens: 6 },
  { id: 1, promptLength: 9, maxTokens: 4 },
  { id: 2, prompt: [5, 6, 7, 8, 1, 2], maxTokens: 7 },
];

async function serve(scheduler: Scheduler<KVCache>, cache: KVCache) {
  const kv = new Map<number, { k: Uint16Array; v: Uint16Array }[]>();
  scheduler.onRetire((request, seq) => {
    kv.set(
      request.id,
      [0, 1].map((layer) => cache.readKV(layer, seq)),
    );
  });
  const handles = SPECS.map((spec) => scheduler.submit(spec));
  await scheduler.run({ untilIdle: true });
  return { tokens: await Promise.all(handles.map(async (h) => (await h.done).tokens)), kv };
}

describe("Scheduler over a StepRunner", () => {
  test("a runner given directly serves the same tokens and K/V as { engine, model }", async () => {
    const a = parts();
    const b = parts();
    const viaModel = await serve(new Scheduler({ cache: a.cache, engine: a.engine, model: a.model }), a.cache);
    const viaRunner = await serve(new Scheduler({ cache: b.cache, runner: b.hostRunner() }), b.cache);
    expect(viaRunner.tokens).toEqual(viaModel.tokens);
    for (const spec of SPECS)
      for (let layer = 0; layer < SHAPE.numLayers; layer++) {
        const [x, y] = [viaRunner.kv.get(spec.id)![layer]!, viaModel.kv.get(spec.id)![layer]!];
        expect(Buffer.from(x.k.buffer).equals(Buffer.from(y.k.buffer))).toBe(true);
        expect(Buffer.from(x.v.buffer).equals(Buffer.from(y.v.buffer))).toBe(true);
      }
    a.dispose();
    b.dispose();
  });

  test("the host runner allocates its q/k/v/out arrays once and reuses them for every batch size", async () => {
    const p = parts();
    const buffers = new Set<ArrayBufferLike>();
    const model = {
      prefill: p.model.prefill.bind(p.model),
      sample(batch: readonly ActiveRequest[], out: Uint16Array) {
        buffers.add(out.buffer);
        return p.model.sample(batch, out);
      },
      forward(
        batch: readonly ActiveRequest[],
        layer: number,
        previous: Uint16Array | null,
        q: Uint16Array,
        k: Uint16Array,
        v: Uint16Array,
      ) {
        for (const array of [q, k, v, previous]) if (array) buffers.add(array.buffer);
        p.model.forward(batch, layer, previous, q, k, v);
      },
    };
    const scheduler = new Scheduler({ cache: p.cache, engine: p.engine, model, maxBatch: 8 });
    for (const spec of SPECS) scheduler.submit({ ...spec, id: undefined });
    const sizes = new Set<number>();
    scheduler.onStep((r) => sizes.add(r.batch));
    await scheduler.run({ untilIdle: true });
    expect(sizes.size).toBeGreaterThan(1); // batches of 3, 2 and 1 rows
    expect(buffers.size).toBe(5); // q, k, v and the two alternating outputs, whatever the batch
    p.dispose();
  });

  test("step() awaits the runner without blocking the event loop; one step at a time", async () => {
    const p = parts();
    const runner = slowRunner(p.hostRunner(), 30);
    const scheduler = new Scheduler({ cache: p.cache, runner });
    const handle = scheduler.submit({ promptLength: 5, maxTokens: 2 });
    let timerFired = false;
    setTimeout(() => {
      timerFired = true;
    }, 1);
    const first = scheduler.step();
    expect(timerFired).toBe(false);
    await expect(scheduler.step()).rejects.toBeInstanceOf(BadStateError);
    const report = await first;
    expect(timerFired).toBe(true); // it ran while the step's "GPU work" did
    expect(report.batch).toBe(1);
    expect(report.timeMs).toBeGreaterThanOrEqual(25);
    await scheduler.step();
    expect((await handle.done).tokens.length).toBe(2);
    expect(runner.steps).toBe(2);
    p.dispose();
  });

  test("run() beside a step the caller started waits for it instead of failing the requests", async () => {
    const p = parts();
    const scheduler = new Scheduler({ cache: p.cache, runner: slowRunner(p.hostRunner(), 10) });
    const handle = scheduler.submit({ promptLength: 5, maxTokens: 4 });
    const manual = scheduler.step();
    await scheduler.run({ untilIdle: true });
    expect((await manual).batch).toBe(1);
    const result = await handle.done;
    expect(result.tokens.length).toBe(4);
    expect(scheduler.totals.failed).toBe(0);
    p.dispose();
  });

  test("a request cancelled during a step ends at once; its pages are freed when the step is done", async () => {
    const p = parts();
    const scheduler = new Scheduler({ cache: p.cache, runner: slowRunner(p.hostRunner(), 20) });
    const handle = scheduler.submit({ promptLength: 10, maxTokens: 50 });
    const tokens: number[] = [];
    const reading = (async () => {
      for await (const event of handle) tokens.push(event.token);
    })();
    await scheduler.step();
    const pending = scheduler.step();
    await Bun.sleep(5); // inside the runner's work
    handle.cancel();
    expect((await handle.done).outcome).toBe("cancelled");
    expect(p.cache.stats().pagesUsed).toBeGreaterThan(0); // the runner may still write them
    const report = await pending;
    expect(report.batch).toBe(1);
    expect(p.cache.stats().pagesUsed).toBe(0);
    await reading;
    expect(tokens.length).toBe(1); // the cancelled step's token is not delivered
    expect(scheduler.busy).toBe(false);
    p.dispose();
  });

  test("`await using` cancels what is live, stops run(), waits for the step in progress, and is final", async () => {
    const p = parts();
    const runner = slowRunner(p.hostRunner(), 10);
    let handle: ReturnType<Scheduler<KVCache>["submit"]>;
    let loop: Promise<void>;
    let closed: Scheduler<KVCache>;
    {
      await using scheduler = new Scheduler({ cache: p.cache, runner });
      closed = scheduler;
      handle = scheduler.submit({ promptLength: 6, maxTokens: 150 });
      loop = scheduler.run();
      await Bun.sleep(35);
    }
    expect((await handle.done).outcome).toBe("cancelled");
    await loop; // ended
    const steps = runner.steps;
    expect(steps).toBeGreaterThan(0);
    await Bun.sleep(30);
    expect(runner.steps).toBe(steps); // nothing runs after dispose
    expect(p.cache.stats().pagesUsed).toBe(0);
    expect(() => closed.submit({ promptLength: 2, maxTokens: 1 })).toThrow(BadStateError);
    await expect(closed.step()).rejects.toThrow(/the scheduler is closed/);
    await expect(closed.run()).rejects.toBeInstanceOf(BadStateError);
    p.dispose();
  });

  test("options: a runner or an engine and model, a runner's methods, its maxBatch bounds the scheduler's", () => {
    const p = parts(4);
    const runner = p.hostRunner();
    expect(() => new Scheduler({ cache: p.cache, runner, engine: p.engine } as never)).toThrow(/either runner/);
    expect(() => new Scheduler({ cache: p.cache, runner: { prefill() {} } as never })).toThrow(/no decode\(\) method/);
    expect(() => new Scheduler({ cache: p.cache, runner, maxBatch: 5 })).toThrow(
      /maxBatch 5 is not an integer in 1\.\.4/,
    );
    expect(() => new Scheduler({ cache: p.cache, runner, shape: { pageSize: 0, numPages: 4 } })).toThrow(
      InvalidArgumentError,
    );
    const scheduler = new Scheduler({ cache: p.cache, runner });
    expect(scheduler.runner).toBe(runner);
    p.dispose();
  });
});

describe("the demo stack", () => {
  test("builds its scheduler over a runner from the factory, and disposes the runner when it closes", async () => {
    let disposed = 0;
    let steps = 0;
    const stack = createDemoStack(rt, sizesFor(rt, { numPages: 64, maxBatch: 4 }), {
      runner: (parts) =>
        hookedHostRunner(parts, {
          beforeDecode: () => steps++,
          dispose: () => disposed++,
        }),
    });
    const handle = stack.scheduler.submit({ promptLength: 5, maxTokens: 3 });
    await stack.scheduler.run({ untilIdle: true });
    expect((await handle.done).tokens.length).toBe(3);
    expect(steps).toBe(3);
    expect(stack.scheduler.runner).not.toBeInstanceOf(HostStepRunner);
    await stack.close();
    expect(disposed).toBe(1);
  });
});
