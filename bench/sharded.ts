// Decode sharded by KV heads: each step of b4-long and b8-bimodal on 1 device and on N (default 2), with
// the outputs compared, the speedup, the plan's host cost per extra device, and how many tokens the pools
// hold in the same memory per device.
//   bun bench/sharded.ts [--backend cuda|cpu] [--devices 2] [--reps 20] [--only b4-long,b8-bimodal]
//                        [--scale 1] [--budget-gib 40] [--out bench/results] [--same-device]
// --same-device puts every shard on GPU 0 (N runtimes of one device): it checks the script and the
// outputs on a one-GPU machine; its speedup means nothing.
// On the CPU backend (simulated devices) the contexts are scaled down (--scale, default 1/256) so that it
// runs in seconds: the numbers then check the script and the logic, not a GPU's speed.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createShardedRuntime, decode, type Event, OutOfPagesError, openRuntime, ShardedRuntime } from "persistentkv";
import { randomHalves, rng } from "persistentkv/testing";
import { commit } from "./meta";

const args = process.argv.slice(2);
const arg = (name: string, fallback: string) => (args.includes(name) ? args[args.indexOf(name) + 1]! : fallback);
const backend = arg("--backend", "cuda") as "cuda" | "cpu";
const devices = Number(arg("--devices", "2"));
const reps = Number(arg("--reps", backend === "cuda" ? "20" : "3"));
const only = arg("--only", "b4-long,b8-bimodal").split(",");
const scale = Number(arg("--scale", backend === "cuda" ? "1" : String(1 / 256)));
const budgetGiB = Number(arg("--budget-gib", backend === "cuda" ? "40" : "0.0625"));
const outDir = arg("--out", "");
const sameDevice = args.includes("--same-device");
const shardedRuntime = (n: number) =>
  sameDevice
    ? new ShardedRuntime(
        backend,
        Array.from({ length: n }, () => 0),
        Array.from({ length: n }, () => openRuntime({ backend })),
        true,
      )
    : createShardedRuntime({ backend, devices: n });
const layersInPool = 2;

interface Workload {
  name: string;
  model: { num_qo_heads: number; num_kv_heads: number; head_dim: number; page_size: number; dtype: "f16" | "bf16" };
  steps: number[][];
}
const workloads: Workload[] = JSON.parse(readFileSync("bench/workloads/decode.json", "utf8")).workloads.filter(
  (w: Workload) => only.includes(w.name),
);
const m = workloads[0]!.model;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const stepsOf = (w: Workload) => w.steps.map((s) => s.map((len) => Math.max(1, Math.round(len * scale))));
const maxBatch = Math.max(...workloads.flatMap((w) => w.steps.map((s) => s.length)));
const maxPages = Math.max(
  ...workloads.flatMap((w) => stepsOf(w).map((s) => s.reduce((n, l) => n + Math.ceil(l / m.page_size), 0))),
);
const maxLen = Math.max(...workloads.flatMap((w) => stepsOf(w).flat()));
const E = m.num_kv_heads * m.head_dim;

/** A stack over `n` devices: cache, engine, per-shard q/out buffers, and the gathered output on shard 0. */
function stack(n: number) {
  const srt = shardedRuntime(n);
  const cache = srt.createKVCache({
    numLayers: layersInPool,
    numPages: maxPages,
    pageSize: m.page_size,
    numKvHeads: m.num_kv_heads,
    headDim: m.head_dim,
    dtype: m.dtype,
    maxSequences: maxBatch,
    maxPagesPerSequence: Math.ceil(maxLen / m.page_size),
  });
  const engine = srt.createDecodeEngine({ numQoHeads: m.num_qo_heads, cache, maxBatch });
  const part = maxBatch * engine.qoHeadsPerShard * m.head_dim * 2;
  const qs = srt.runtimes.map((_, s) => srt.allocDevice(s, part));
  const outs = srt.runtimes.map((_, s) => srt.allocDevice(s, part));
  const gathered = srt.allocDevice(0, maxBatch * m.num_qo_heads * m.head_dim * 2);
  const events = srt.runtimes.map((rt) => [rt.createEvent(), rt.createEvent()] as [Event, Event]);
  return { srt, cache, engine, qs, outs, gathered, events };
}
type Stack = ReturnType<typeof stack>;

// The same K and V in both stacks: one random chunk of tokens, written over and over.
const chunkTokens = 2048;
const chunk = { k: randomHalves(m.dtype, chunkTokens * E, rng(1)), v: randomHalves(m.dtype, chunkTokens * E, rng(2)) };
function fill(s: Stack, lengths: number[]) {
  const seqs = lengths.map((len) => {
    const seq = s.cache.createSequence();
    for (let done = 0; done < len; done += chunkTokens) {
      const n = Math.min(chunkTokens, len - done);
      const slots = s.cache.append(seq, n);
      for (let layer = 0; layer < layersInPool; layer++)
        s.cache.writeKV(layer, slots, chunk.k.subarray(0, n * E), chunk.v.subarray(0, n * E), { atomic: false });
    }
    return seq;
  });
  return seqs;
}

function setQ(s: Stack, q: Uint16Array, batch: number) {
  const per = s.engine.qoHeadsPerShard * m.head_dim;
  s.qs.forEach((buffer, shard) => {
    const part = new Uint16Array(batch * per);
    for (let b = 0; b < batch; b++)
      part.set(q.subarray((b * s.srt.size + shard) * per, (b * s.srt.size + shard + 1) * per), b * per);
    buffer.write(part);
  });
}

function time(s: Stack, seqs: ReturnType<typeof fill>) {
  const { srt, engine, cache, qs, outs, events } = s;
  let plan = engine.plan(cache, seqs);
  for (let i = 0; i < 3; i++) engine.run(plan, 0, qs, outs);
  srt.synchronize();
  const kernel: number[] = [];
  for (let i = 0; i < reps; i++) {
    for (const rt of srt.runtimes) rt.flushL2();
    events.forEach(([start]) => start.record());
    engine.run(plan, i % layersInPool, qs, outs);
    events.forEach(([, stop]) => stop.record());
    // The step ends when its slowest device does.
    for (const [, stop] of events) stop.synchronize();
    kernel.push(Math.max(...events.map(([start, stop]) => stop.elapsedSince(start))));
  }
  const wall = (layers: number, n: number) => {
    const times: number[] = [];
    for (let i = 0; i < n; i++) {
      for (const rt of srt.runtimes) rt.flushL2();
      srt.synchronize();
      const t = performance.now();
      plan = engine.plan(cache, seqs);
      for (let layer = 0; layer < layers; layer++) engine.run(plan, layer % layersInPool, qs, outs);
      srt.synchronize();
      times.push(performance.now() - t);
    }
    return median(times) * 1000;
  };
  // The plan's host cost: shard 0's plan alone against the plan of every shard, in alternating rounds
  // (medians), so that the difference is the copies' cost and not the host's noise.
  const rounds: [number[], number[]] = [[], []];
  const plans = [() => engine.engines[0]!.plan(cache, seqs), () => engine.plan(cache, seqs)];
  for (let round = 0; round < 11; round++)
    plans.forEach((plan, i) => {
      const t = performance.now();
      for (let k = 0; k < 100; k++) plan();
      rounds[i]!.push(((performance.now() - t) / 100) * 1000);
    });
  const [leaderUs, planUs] = rounds.map(median) as [number, number];
  const wallUs = wall(1, reps),
    wall32 = wall(32, Math.min(reps, 10));
  plan = engine.plan(cache, seqs);
  return { plan, kernelUs: median(kernel) * 1000, wallUs, wall32, planUs, leaderUs };
}

function gather(s: Stack, plan: ReturnType<typeof time>["plan"], batch: number): Uint16Array {
  s.engine.run(plan, 0, s.qs, s.outs, { gather: { into: s.gathered } });
  s.srt.synchronize();
  const out = new Uint16Array(batch * m.num_qo_heads * m.head_dim);
  s.gathered.read(out);
  return out;
}

/** Tokens the pool holds when each device gives it `budgetGiB` (32 layers): appended until out of pages. */
function capacity(n: number): number {
  using srt = shardedRuntime(n);
  const pageBytes = 32 * 2 * (m.num_kv_heads / n) * m.page_size * m.head_dim * 2;
  const numPages = Math.floor((budgetGiB * 2 ** 30) / pageBytes);
  const cache = srt.createKVCache({
    numLayers: 32,
    numPages,
    pageSize: m.page_size,
    numKvHeads: m.num_kv_heads,
    headDim: m.head_dim,
    dtype: m.dtype,
    maxPagesPerSequence: Math.ceil(131072 / m.page_size),
  });
  // Whole 128K-token sequences, then ever smaller appends until not even one page is left.
  let tokens = 0;
  let seq = cache.createSequence();
  for (let chunk = 16384; chunk >= 1; ) {
    if (seq.length + chunk > 131072) {
      tokens += seq.length;
      seq = cache.createSequence();
    }
    try {
      cache.append(seq, chunk);
    } catch (error) {
      if (!(error instanceof OutOfPagesError)) throw error;
      chunk >>= 1;
    }
  }
  return tokens + seq.length;
}

const one = stack(1);
const many = stack(devices);
console.log(
  `${one.srt.runtimes[0]!.info.name} x ${devices} (${backend}, peer access ${many.srt.peerAccess}), scale ${scale}`,
);
const rows: Record<string, unknown>[] = [];
for (const w of workloads)
  stepsOf(w).forEach((lengths, step) => {
    const seqs1 = fill(one, lengths),
      seqsN = fill(many, lengths);
    const q = randomHalves(m.dtype, lengths.length * m.num_qo_heads * m.head_dim, rng(3 + step));
    setQ(one, q, lengths.length);
    setQ(many, q, lengths.length);
    const a = time(one, seqs1),
      b = time(many, seqsN);
    const out1 = gather(one, a.plan, lengths.length),
      outN = gather(many, b.plan, lengths.length);
    let differ = 0;
    for (let i = 0; i < out1.length; i++) if (out1[i] !== outN[i]) differ++;
    // Where the planner splits rows differently (fewer heads per device fill the wave with more splits),
    // partials merge in another order: equal within rounding, not bit for bit.
    const [x, y] = [decode(m.dtype, outN), decode(m.dtype, out1)];
    let num = 0,
      den = 0;
    for (let i = 0; i < x.length; i++) {
      num += (x[i]! - y[i]!) ** 2;
      den += y[i]! ** 2;
    }
    const row = {
      workload: w.name,
      step,
      batch: lengths.length,
      tokens: a.plan.totalTokens,
      kernel_us_1: +a.kernelUs.toFixed(2),
      [`kernel_us_${devices}`]: +b.kernelUs.toFixed(2),
      speedup_kernel: +(a.kernelUs / b.kernelUs).toFixed(3),
      wall_us_1: +a.wallUs.toFixed(2),
      [`wall_us_${devices}`]: +b.wallUs.toFixed(2),
      speedup_wall: +(a.wallUs / b.wallUs).toFixed(3),
      wall_us_32_layers_1: +a.wall32.toFixed(1),
      [`wall_us_32_layers_${devices}`]: +b.wall32.toFixed(1),
      plan_us_1: +a.planUs.toFixed(2),
      [`plan_us_${devices}`]: +b.planUs.toFixed(2),
      plan_us_per_extra_device: +((b.planUs - b.leaderUs) / Math.max(1, devices - 1)).toFixed(2),
      kernels: `${a.plan.kernel} / ${b.plan.kernel}`,
      outputs_differing: differ,
      rel_error: +Math.sqrt(num / Math.max(den, 1e-30)).toExponential(2),
    };
    rows.push(row);
    console.log(JSON.stringify(row));
    for (const seq of seqs1) one.cache.release(seq);
    for (const seq of seqsN) many.cache.release(seq);
  });
const tokens1 = capacity(1),
  tokensN = capacity(devices);
console.log(
  `pool capacity at ${budgetGiB} GiB per device, 32 layers: ${tokens1} tokens on 1, ${tokensN} on ${devices} (${(tokensN / tokens1).toFixed(2)}x)`,
);
const result = {
  device: one.srt.runtimes[0]!.info.name,
  devices,
  backend,
  same_device: sameDevice,
  commit: commit(),
  date: new Date().toISOString(),
  scale,
  timing: `CUDA events per device around one run (the step's time is the slowest device's), median of ${reps}, L2 flushed on every device first; wall: plan + runs on every device + sync of all, median`,
  capacity: {
    budget_gib_per_device: budgetGiB,
    tokens_1: tokens1,
    [`tokens_${devices}`]: tokensN,
    ratio: +(tokensN / tokens1).toFixed(3),
  },
  rows,
};
if (outDir) {
  mkdirSync(outDir, { recursive: true });
  const gpu = result.device.includes("H200") ? "h200" : backend === "cpu" ? "cpu" : "gpu";
  const path = `${outDir}/sharded-${result.date.slice(0, 10)}-${gpu}x${devices}.json`;
  writeFileSync(path, JSON.stringify(result, null, 1));
  const n = devices;
  const table = [
    `# Decode sharded by KV heads: ${result.device}, 1 vs ${n} devices (commit ${result.commit})`,
    "",
    result.timing,
    "",
    `| workload | step | batch | tokens | kernel us 1 | kernel us ${n} | speedup | wall us 1 | wall us ${n} | speedup | plan us per extra device | outputs differing | rel. error |`,
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ...rows.map(
      (r) =>
        `| ${r.workload} | ${r.step} | ${r.batch} | ${r.tokens} | ${r.kernel_us_1} | ${r[`kernel_us_${n}`]} | ${r.speedup_kernel}x | ` +
        `${r.wall_us_1} | ${r[`wall_us_${n}`]} | ${r.speedup_wall}x | ${r.plan_us_per_extra_device} | ${r.outputs_differing} | ${r.rel_error} |`,
    ),
    "",
    `Pool capacity at ${budgetGiB} GiB per device (32 layers): ${tokens1} tokens on 1 device, ${tokensN} on ${n} (${result.capacity.ratio}x).`,
    "",
  ].join("\n");
  writeFileSync(path.replace(/\.json$/, ".md"), table);
  console.log(`wrote ${path} and its .md table`);
}
one.srt.dispose();
many.srt.dispose();
