// Host costs of the per-step hot path: an FFI call, building a step's plan at B = 1..1024, a decode
// step's page-table update (every row appends a token, 1 in 16 starts a page, then plan uploads the
// deltas), and run()'s host cost per layer. tinybench where a call is cheap to repeat; hand-timed
// medians where the GPU must not be flooded. (bench/kvcache.bench.ts times the cache's own operations.)
//   bun bench/micro.ts [--backend cuda|cpu] [--out file.json]
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import { Bench } from "tinybench";
import { openRuntime, type Sequence } from "persistentkv";
import { native, PLAN_INFO } from "persistentkv/ffi";

const { values } = parseArgs({ options: { backend: { type: "string", default: "auto" }, out: { type: "string" } } });
using rt = openRuntime({ backend: values.backend as "auto" });
const shape = { numKvHeads: 8, headDim: 128, pageSize: 16, dtype: "f16" as const };
const BATCHES = [1, 8, 64, 256, 1024];
const STEPS = 1000; // page-table steps: each of 256 rows grows by STEPS tokens
const length = (i: number) => 64 + ((i * 7919) % 1984); // 64..2047 tokens, spread over page offsets
const pages = BATCHES.at(-1)! * 128 + 256 * Math.ceil(STEPS / 16 + 1) + 64;
using cache = rt.createKVCache({
  ...shape,
  numLayers: 1,
  numPages: pages,
  maxSequences: 1024,
  maxPagesPerSequence: 256,
});
using engine = rt.createDecodeEngine({ ...shape, numQoHeads: 32, policy: "adaptive", maxBatch: 1024 });
const seqs: Sequence[] = Array.from({ length: 1024 }, (_, i) => {
  const seq = cache.createSequence();
  cache.append(seq, length(i));
  return seq;
});
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const results: Record<string, number> = {};

const bench = new Bench({ time: 300, warmupTime: 50 });
const lib = native();
using buffer = rt.allocDevice(256);
const size = new BigUint64Array(1);
bench.add("ffi call: pkv_abi_version (x1000)", () => {
  for (let i = 0; i < 1000; i++) lib.pkv_abi_version();
});
bench.add("ffi call: pkv_buffer_size, handle checked + out-parameter (x1000)", () => {
  for (let i = 0; i < 1000; i++) lib.pkv_buffer_size(buffer.handle, size);
});
for (const batch of BATCHES) {
  const step = seqs.slice(0, batch);
  engine.plan(cache, step); // uploads the rows' table entries once
  bench.add(`plan B=${batch}`, () => {
    engine.plan(cache, step);
  });
}
await bench.run();
for (const task of bench.tasks) {
  const result = task.result;
  if (!result || !("latency" in result)) throw new Error(`${task.name}: no result (${result?.state})`);
  const perCall = task.name.includes("x1000") ? 1000 : 1;
  results[`${task.name.replace(/ \(x1000\)$/, "")} us`] = +((result.latency.p50! * 1000) / perCall).toFixed(4);
}
rt.synchronize();

// The same plans with the GPU idle before each (a serving loop waits for each step's logits, so the
// staging image a plan reuses is never still in flight), the native call alone (no describeBatch, no
// Plan object) and describeBatch alone: which part of a plan is the bindings', which the library's.
for (const batch of [8, 256]) {
  const step = seqs.slice(0, batch);
  const rows = new Int32Array(batch),
    lengths = new Int32Array(batch),
    info = PLAN_INFO.alloc();
  cache.describeBatch(step, rows, lengths);
  const idle: number[] = [],
    call: number[] = [],
    describe: number[] = [];
  for (let i = 0; i < 1000; i++) {
    rt.synchronize();
    let t = performance.now();
    engine.plan(cache, step);
    idle.push(performance.now() - t);
    rt.synchronize();
    t = performance.now();
    lib.pkv_decode_plan(engine.handle, cache.poolHandle, batch, rows, lengths, -1, info);
    call.push(performance.now() - t);
    t = performance.now();
    cache.describeBatch(step, rows, lengths);
    describe.push(performance.now() - t);
  }
  results[`plan B=${batch}, GPU idle us`] = +(median(idle) * 1000).toFixed(3);
  results[`pkv_decode_plan alone B=${batch}, GPU idle us`] = +(median(call) * 1000).toFixed(3);
  results[`describeBatch alone B=${batch} us`] = +(median(describe) * 1000).toFixed(3);
}

// One decode step of 256 rows: append one token each (every 16th row crosses into a new page), then plan.
{
  const step = seqs.slice(0, 256);
  const one = new Int32Array(1);
  const times: number[] = [];
  for (let s = 0; s < STEPS; s++) {
    const t = performance.now();
    for (const seq of step) cache.append(seq, 1, one);
    engine.plan(cache, step);
    times.push(performance.now() - t);
  }
  results["page-table step B=256 (256 appends + plan with deltas) us"] = +(median(times) * 1000).toFixed(2);
}

// run()'s host cost per layer: queue 32 layers without waiting, then synchronize outside the timing.
if (rt.backend === "cuda") {
  const step = seqs.slice(0, 8);
  const bytes = 8 * 32 * 128 * 2;
  using q = rt.allocDevice(bytes);
  using out = rt.allocDevice(bytes);
  q.fill(0x3c);
  const times: number[] = [];
  for (let i = 0; i < 200; i++) {
    const plan = engine.plan(cache, step);
    rt.synchronize();
    const t = performance.now();
    for (let layer = 0; layer < 32; layer++) engine.run(plan, 0, q, out);
    times.push((performance.now() - t) / 32);
    rt.synchronize();
  }
  results["run() host cost per layer, B=8, device buffers us"] = +(median(times) * 1000).toFixed(2);
}

const report = { device: rt.info.name, backend: rt.backend, date: new Date().toISOString(), median_us: results };
console.table(Object.entries(results).map(([name, us]) => ({ name, us })));
if (values.out) {
  mkdirSync(dirname(values.out), { recursive: true });
  writeFileSync(values.out, `${JSON.stringify(report, null, 1)}\n`);
}
