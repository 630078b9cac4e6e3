// Several query tokens per request on the GPU: speculative verification sizes (q = 1, 2, 4, 8, 16 on the
// contexts of the shared decode workloads: bandwidth against the read ceiling, time against the q = 1
// step) and chunked prefill (chunks of 512-2048 tokens over 4K-32K contexts: TFLOP/s against the
// tensor-core probe of the same run). Kernel times are CUDA events around one layer's run, median of
// --reps launches, L2 flushed before each, as bench/decode.ts times them.
//   bun bench/multiquery.ts [--out bench/results] [--reps 20] [--steps 2] [--only b8-bimodal,b4-long]
//     [--q-lens 1,4] (the speculative sizes: 1, 2, 4, 8, 16) [--no-prefill]
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { openRuntime, type Plan } from "persistentkv";
import { native } from "persistentkv/ffi";
import { randomHalves, rng, TestPool, type TestSequence } from "persistentkv/testing";
import { commit } from "./meta";

const args = process.argv.slice(2);
const arg = (name: string, fallback: string) => (args.includes(name) ? args[args.indexOf(name) + 1]! : fallback);
const outDir = arg("--out", "bench/results");
const reps = Number(arg("--reps", "20"));
const stepsPerWorkload = Number(arg("--steps", "2")); // the first steps of each workload (GPU time is short)
const only = arg("--only", "");
const SPECULATIVE = arg("--q-lens", "1,2,4,8,16").split(",").map(Number);
const prefill = !args.includes("--no-prefill");
const PREFILL = { contexts: [4096, 8192, 16384, 32768], chunks: [512, 1024, 2048] };

interface Workload {
  name: string;
  model: { num_qo_heads: number; num_kv_heads: number; head_dim: number; page_size: number; dtype: "f16" | "bf16" };
  steps: number[][];
}
const workloads: Workload[] = JSON.parse(readFileSync("bench/workloads/decode.json", "utf8")).workloads.filter(
  (w: Workload) => !only || only.split(",").includes(w.name),
);
const m = workloads[0]!.model;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const steps = workloads.flatMap((w) =>
  w.steps.slice(0, stepsPerWorkload).map((lengths, step) => ({ w, step, lengths })),
);

using rt = openRuntime({ backend: "cuda" });
const ceiling = rt.probeReadBandwidth({ bytes: 2 ** 31, iterations: 20 });
const peakOut = new Float64Array(1);
const probeStatus = native().pkv_probe_mma_tflops(rt.handle, m.dtype === "bf16" ? 1 : 0, 20, peakOut);
if (probeStatus !== 0) throw new Error(`pkv_probe_mma_tflops: ${native().pkv_last_error()}`);
const peak = peakOut[0]!;
console.log(
  `${rt.info.name}: read ceiling ${ceiling.toFixed(1)} GB/s, mma.m16n8k16 ${m.dtype} peak ${peak.toFixed(1)} TFLOP/s`,
);

const maxTokens = Math.max(...steps.map((s) => s.lengths.reduce((a, b) => a + b, 0)), ...PREFILL.contexts);
const maxRows = Math.max(...steps.map((s) => s.lengths.length));
const maxLen = Math.max(...steps.flatMap((s) => s.lengths), ...PREFILL.contexts);
const pool = new TestPool(
  rt,
  {
    numLayers: 1,
    numPages: Math.ceil(maxTokens / m.page_size) + maxRows,
    pageSize: m.page_size,
    numKvHeads: m.num_kv_heads,
    headDim: m.head_dim,
    dtype: m.dtype,
    maxSequences: maxRows,
    maxPagesPerSequence: Math.ceil(maxLen / m.page_size),
  },
  11,
  false,
);
const engine = rt.createDecodeEngine({
  numQoHeads: m.num_qo_heads,
  numKvHeads: m.num_kv_heads,
  headDim: m.head_dim,
  pageSize: m.page_size,
  dtype: m.dtype,
  maxBatch: maxRows,
});
const rowBytes = m.num_qo_heads * m.head_dim * 2;
const maxQueries = Math.max(maxRows * 16, ...PREFILL.chunks);
const q = rt.allocDevice(maxQueries * rowBytes),
  out = rt.allocDevice(maxQueries * rowBytes);
q.write(randomHalves(m.dtype, (maxQueries * rowBytes) / 2, rng(5), 2));
const start = rt.createEvent(),
  stop = rt.createEvent();

// Kernel time (events, L2 cold) and synchronized wall time of plan + 1 and 32 layers.
function time(seqs: TestSequence[], qLens: number[]) {
  const plan = () => engine.plan(pool, seqs, { qLens });
  let p: Plan = plan();
  for (let i = 0; i < 3; i++) engine.run(p, 0, q, out);
  const kernel: number[] = [];
  for (let i = 0; i < reps; i++) {
    rt.flushL2();
    start.record();
    engine.run(p, 0, q, out);
    stop.record();
    stop.synchronize();
    kernel.push(stop.elapsedSince(start) * 1000);
  }
  const wall = (layers: number, n: number) => {
    const times: number[] = [];
    for (let i = 0; i < n; i++) {
      rt.flushL2();
      rt.synchronize();
      const t = performance.now();
      p = plan();
      for (let layer = 0; layer < layers; layer++) engine.run(p, 0, q, out);
      rt.synchronize();
      times.push((performance.now() - t) * 1000);
    }
    return median(times);
  };
  return { plan: p, kernelUs: median(kernel), wallUs: wall(1, reps), wall32: wall(32, 5) };
}

const rows: Record<string, number | string>[] = [];
for (const { w, step, lengths } of steps) {
  pool.reset();
  const seqs = lengths.map((len) => pool.addSequence(len));
  engine.plan(pool, seqs); // uploads the table once
  let q1Us = 0;
  for (const qLen of SPECULATIVE) {
    const qLens = lengths.map((len) => Math.min(qLen, len));
    const r = time(seqs, qLens);
    if (qLen === 1) q1Us = r.kernelUs;
    const bytes = r.plan.kvBytes + 2 * r.plan.queryTokens * rowBytes; // K, V, q, out
    const gbps = bytes / r.kernelUs / 1e3;
    rows.push({
      workload: w.name,
      step,
      policy: "adaptive",
      kernel: r.plan.kernel,
      batch: lengths.length,
      tokens: r.plan.totalTokens,
      kv_bytes: r.plan.kvBytes,
      kernel_us: +r.kernelUs.toFixed(2),
      wall_us: +r.wallUs.toFixed(2),
      wall_us_32_layers: +r.wall32.toFixed(1),
      gbps: +gbps.toFixed(1),
      pct_ceiling: +((100 * gbps) / ceiling).toFixed(1),
      q_len: qLen,
      query_tokens: r.plan.queryTokens,
      vs_q1: q1Us > 0 ? +(r.kernelUs / q1Us).toFixed(3) : "",
      tasks: r.plan.numTasks,
      max_splits: r.plan.maxSplits,
    });
    console.log(
      `${w.name} ${step} q=${String(qLen).padStart(2)} ${r.plan.kernel.padEnd(10)} ${r.kernelUs.toFixed(1).padStart(8)} us ` +
        `${((100 * gbps) / ceiling).toFixed(1).padStart(5)}% of ceiling, ${(r.kernelUs / q1Us).toFixed(2)}x q=1, tasks ${r.plan.numTasks}`,
    );
  }
}

for (const context of prefill ? PREFILL.contexts : [])
  for (const chunk of PREFILL.chunks) {
    pool.reset();
    const seqs = [pool.addSequence(context)];
    const r = time(seqs, [chunk]);
    // Causal pairs (query token, visible context token); QK and PV are 2 FLOPs per pair, head and dim each.
    const pairs = chunk * (context - chunk) + (chunk * (chunk + 1)) / 2;
    const flops = 4 * pairs * m.num_qo_heads * m.head_dim;
    const tflops = flops / (r.kernelUs * 1e-6) / 1e12;
    const gbps = (r.plan.kvBytes + 2 * chunk * rowBytes) / r.kernelUs / 1e3;
    rows.push({
      workload: `prefill-${context / 1024}k-chunk${chunk}`,
      step: 0,
      policy: "adaptive",
      kernel: r.plan.kernel,
      batch: 1,
      tokens: context,
      kv_bytes: r.plan.kvBytes,
      kernel_us: +r.kernelUs.toFixed(2),
      wall_us: +r.wallUs.toFixed(2),
      wall_us_32_layers: +r.wall32.toFixed(1),
      gbps: +gbps.toFixed(1),
      pct_ceiling: +((100 * gbps) / ceiling).toFixed(1),
      q_len: chunk,
      tflops: +tflops.toFixed(1),
      peak_tflops: +peak.toFixed(1),
      pct_peak: +((100 * tflops) / peak).toFixed(1),
      tasks: r.plan.numTasks,
    });
    console.log(
      `prefill ${context} chunk ${chunk}: ${r.kernelUs.toFixed(1)} us, ${tflops.toFixed(1)} TFLOP/s = ${((100 * tflops) / peak).toFixed(1)}% of the probe`,
    );
  }

const date = new Date().toISOString();
const result = {
  device: rt.info.name,
  commit: commit(),
  date,
  ceiling_gbps: +ceiling.toFixed(1),
  peak_tflops: +peak.toFixed(1),
  timing:
    `CUDA events around one layer's run, median of ${reps} launches, L2 flushed before each; wall: plan + runs + sync, ` +
    `median of ${reps} (1 layer) / 5 (32 layers); bytes = K + V + q + out; peak: pkv_probe_mma_tflops (mma.m16n8k16 ` +
    `on register operands, fp32 accumulate, median of 20 launches); prefill FLOPs = 4 x causal pairs x Hq x d`,
  rows,
};
mkdirSync(outDir, { recursive: true });
const gpu = rt.info.name.includes("H100") ? "h100" : rt.info.name.includes("H200") ? "h200" : "gpu";
const base = `${outDir}/multiquery-${date.slice(0, 10)}-${gpu}`;
writeFileSync(`${base}.json`, JSON.stringify(result, null, 1));
const table = [
  `# Multi-query attention on ${result.device} (${result.commit.slice(0, 7)}, ${date.slice(0, 10)})`,
  "",
  `Read ceiling ${result.ceiling_gbps} GB/s; tensor-core probe ${result.peak_tflops} TFLOP/s. ${result.timing}.`,
  "",
  "| workload | step | q_len | kernel | kernel us | % ceiling | x q=1 | TFLOP/s | % peak |",
  "|---|---|---|---|---|---|---|---|---|",
  ...rows.map(
    (r) =>
      `| ${r.workload} | ${r.step} | ${r.q_len} | ${r.kernel} | ${r.kernel_us} | ${r.pct_ceiling} | ${r.vs_q1 ?? ""} | ${r.tflops ?? ""} | ${r.pct_peak ?? ""} |`,
  ),
  "",
].join("\n");
writeFileSync(`${base}.md`, table);
console.log(`wrote ${base}.json and .md`);
