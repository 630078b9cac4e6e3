// The Scheduler serves requests over a cache and engine sharded by KV heads exactly as over one device:
// the same tokens for every request (the synthetic model turns attention outputs into tokens, so any
// difference in K, V or output shows), with preemption by swap on both.
import { expect, test } from "bun:test";
import { createShardedRuntime, openRuntime, type RequestSpec, Scheduler, SyntheticModel } from "../lib/index.ts";

const SHAPE = { numLayers: 2, numQoHeads: 8, numKvHeads: 4, headDim: 64, pageSize: 4 };

const load: RequestSpec[] = Array.from({ length: 24 }, (_, id) => ({
  id,
  prompt: Array.from({ length: 3 + ((id * 7) % 20) }, (_, i) => (id % 3 === 0 ? 500 + i : 1000 * id + i)),
  maxTokens: 2 + ((id * 5) % 15),
}));

const OPTIONS = { ...SHAPE, numPages: 48, dtype: "f16" as const, swapPages: 64, maxSequences: 32 };
const model = () => new SyntheticModel({ ...SHAPE, dtype: "f16" });

/** The scheduler over one device (a plain runtime) or over N simulated devices: the same calls. */
function schedulerOn(devices: number | null): { scheduler: Scheduler; runtime: Disposable } {
  if (devices === null) {
    const runtime = openRuntime({ backend: "cpu" });
    const cache = runtime.createKVCache(OPTIONS);
    const engine = runtime.createDecodeEngine({ numQoHeads: SHAPE.numQoHeads, cache, maxBatch: 16 });
    return { runtime, scheduler: new Scheduler({ cache, engine, model: model(), maxBatch: 16 }) };
  }
  const runtime = createShardedRuntime({ backend: "cpu", devices });
  const cache = runtime.createKVCache(OPTIONS);
  const engine = runtime.createDecodeEngine({ numQoHeads: SHAPE.numQoHeads, cache, maxBatch: 16 });
  return { runtime, scheduler: new Scheduler({ cache, engine, model: model(), maxBatch: 16 }) };
}

async function serve(devices: number | null) {
  const { scheduler, runtime } = schedulerOn(devices);
  using _ = runtime;
  const handles = load.map((spec) => scheduler.submit(spec));
  await scheduler.run({ untilIdle: true });
  return { results: await Promise.all(handles.map((h) => h.done)), totals: scheduler.totals };
}

test("the same tokens over 1, 2 and 4 devices, with preemption", async () => {
  const one = await serve(null);
  expect(one.totals.preemptedBySwap + one.totals.preemptedByRecompute).toBeGreaterThan(0);
  for (const devices of [2, 4]) {
    const sharded = await serve(devices);
    expect(sharded.results.map((r) => [r.outcome, Array.from(r.tokens)])).toEqual(
      one.results.map((r) => [r.outcome, Array.from(r.tokens)]),
    );
  }
});
