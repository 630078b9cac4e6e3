// Decode kernel benchmark over the shared workloads: every step with each policy, timed as in
// bench/workloads/peers-h200.md (CUDA events, median of N launches, L2 flushed before each launch).
//   bun bench/decode.ts [--workloads bench/workloads/decode.json] [--out bench/results] [--reps 30] [--only b1-bucketed,b4-long]
//                       [--sequential-pages] [--dtype f16,fp8_e4m3]
// --dtype: the KV storage types to measure, one after another in this run (default: the workloads' own); an
// FP8 run keeps the workloads' 16-bit type for q and out. Every row says its "dtype".
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { type DecodePolicy, type KVDType, openRuntime } from "persistentkv";
import { randomHalves, rng, TestPool } from "persistentkv/testing";
import { chart } from "./chart";
import { commit } from "./meta";
import { type DecodeResult, type DecodeRow, flashInferSteps, peersPath, report } from "./report";
import { cliArg, kernelUs as timeKernel, readCeiling, wallUs as timeWall } from "./timing";

const args = process.argv.slice(2);
const arg = (name: string, fallback: string) => cliArg(args, name, fallback);
const workloadsPath = arg("--workloads", "bench/workloads/decode.json");
const outDir = arg("--out", "bench/results");
const reps = Number(arg("--reps", "30"));
const only = arg("--only", "");
const sequential = args.includes("--sequential-pages"); // diagnostic: page ids in order instead of shuffled
// Engine settings for comparisons (lib/engine.ts EngineSettings), e.g. '{"math":"cuda-cores"}' or '{"tailPercent":0}'.
const settings = args.includes("--settings") ? JSON.parse(arg("--settings", "{}")) : undefined;
const layersInPool = 4; // wall_us_32_layers cycles these: big steps leave L2 cold anyway

interface Workload {
  name: string;
  model: { num_qo_heads: number; num_kv_heads: number; head_dim: number; page_size: number; dtype: "f16" | "bf16" };
  steps: number[][];
}
const workloads: Workload[] = JSON.parse(readFileSync(workloadsPath, "utf8")).workloads.filter(
  (w: Workload) => !only || only.split(",").includes(w.name),
);

using rt = openRuntime({ backend: "cuda" });
const ceiling = readCeiling(rt);

// One pool for every workload of a model shape: pages for the largest step, page ids shuffled.
const m = workloads[0]!.model;
for (const w of workloads)
  if (JSON.stringify(w.model) !== JSON.stringify(m)) throw new Error(`workload ${w.name} has another model shape`);
const dtypes = arg("--dtype", m.dtype).split(",") as KVDType[];
const maxBatch = Math.max(...workloads.flatMap((w) => w.steps.map((s) => s.length)));
const maxLen = Math.max(...workloads.flatMap((w) => w.steps.flat()));
const maxPages = Math.max(
  ...workloads.flatMap((w) => w.steps.map((s) => s.reduce((n, l) => n + Math.ceil(l / m.page_size), 0))),
);
const rows: DecodeRow[] = [];
const policies: DecodePolicy[] = ["baseline", "persistent", "adaptive"];
let calibrated = true;

// Every workload step with every policy on a pool (and engine) of one KV dtype; freed before the next dtype's.
function measure(dtype: KVDType): void {
  const t0 = performance.now();
  const pool = new TestPool(
    rt,
    {
      numLayers: layersInPool,
      numPages: maxPages,
      pageSize: m.page_size,
      numKvHeads: m.num_kv_heads,
      headDim: m.head_dim,
      dtype,
      queryDtype: m.dtype,
      maxSequences: maxBatch,
      maxPagesPerSequence: Math.ceil(maxLen / m.page_size),
    },
    11,
    false,
    !sequential,
  );
  console.log(
    `${dtype} pool: ${maxPages} pages x ${layersInPool} layers filled in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  // Through the runtime, so the adaptive policy uses this GPU's stored calibration (bun run calibrate).
  const engine = rt.createDecodeEngine({
    numQoHeads: m.num_qo_heads,
    numKvHeads: m.num_kv_heads,
    headDim: m.head_dim,
    pageSize: m.page_size,
    dtype,
    queryDtype: m.dtype,
    maxBatch,
    settings,
  });
  console.log(`engine settings: ${JSON.stringify(engine.settings)}`);
  console.log(`adaptive policy: ${engine.calibrated ? "calibrated table" : "built-in rule (no calibration stored)"}`);
  const ioBytes = maxBatch * m.num_qo_heads * m.head_dim * 2;
  const q = rt.allocDevice(ioBytes),
    out = rt.allocDevice(ioBytes);
  q.write(randomHalves(m.dtype, ioBytes / 2, rng(5), 2));

  for (const w of workloads) {
    w.steps.forEach((lengths, step) => {
      pool.reset();
      const seqs = lengths.map((len) => pool.addSequence(len));
      engine.plan(pool, seqs); // uploads the table once; the timed plans below carry no deltas
      for (const policy of policies) {
        let plan = engine.plan(pool, seqs, { policy });
        for (let i = 0; i < 3; i++) engine.run(plan, 0, q, out);
        const kernelUs = timeKernel(rt, (i) => engine.run(plan, i % layersInPool, q, out), reps);
        // Synchronized wall time as the serving loop sees it: plan + upload + run(s) + sync, L2 cold.
        const wall = (layers: number, n: number) =>
          timeWall(
            rt,
            () => {
              plan = engine.plan(pool, seqs, { policy });
              for (let layer = 0; layer < layers; layer++) engine.run(plan, layer % layersInPool, q, out);
            },
            n,
          );
        // The same 32 layers replayed from a CUDA graph: plan (outside the capture) + one launch + sync.
        using graph = rt.capture(() => {
          for (let layer = 0; layer < 32; layer++) engine.run(plan, layer % layersInPool, q, out);
        });
        const wallUs = wall(1, reps),
          wall32 = wall(32, 10),
          // Same step, same plan: the graph's image is refreshed in place.
          wall32Graph = timeWall(
            rt,
            () => {
              plan = engine.plan(pool, seqs, { policy });
              graph.launch();
            },
            10,
          );
        const bytes = plan.kvBytes + 2 * lengths.length * m.num_qo_heads * m.head_dim * 2; // K, V, q, out
        const gbps = bytes / kernelUs / 1e3;
        rows.push({
          workload: w.name,
          step,
          dtype,
          policy,
          kernel: plan.kernel,
          batch: lengths.length,
          tokens: plan.totalTokens,
          kv_bytes: plan.kvBytes,
          kernel_us: +kernelUs.toFixed(2),
          wall_us: +wallUs.toFixed(2),
          wall_us_32_layers: +wall32.toFixed(1),
          wall_us_32_layers_graph: +wall32Graph.toFixed(1),
          gbps: +gbps.toFixed(1),
          pct_ceiling: +((100 * gbps) / ceiling).toFixed(1),
          tasks: plan.numTasks,
          grid: plan.grid,
          max_splits: plan.maxSplits,
        });
        console.log(
          `${w.name} ${step} ${dtype} ${policy.padEnd(10)} ${plan.kernel.padEnd(10)} ${kernelUs.toFixed(1).padStart(8)} us ` +
            `${((100 * gbps) / ceiling).toFixed(1).padStart(5)}%  wall ${wallUs.toFixed(1)} us, 32 layers ${wall32.toFixed(0)} us (graph ${wall32Graph.toFixed(0)})` +
            `  tasks ${plan.numTasks} grid ${plan.grid} splits ${plan.maxSplits}`,
        );
      }
    });
  }
  calibrated &&= engine.calibrated;
  for (const b of [q, out]) b.dispose();
  engine.dispose();
  pool.dispose();
}
for (const dtype of dtypes) measure(dtype);

const date = new Date().toISOString();
const result = {
  device: rt.info.name,
  commit: commit(),
  date,
  ceiling_gbps: +ceiling.toFixed(1),
  timing: `CUDA events around one run, median of ${reps} launches, L2 flushed (256 MiB read) before each; wall: plan + runs + sync on the host clock, L2 flushed first, median of ${reps} (1 layer) / 10 (32 layers cycling ${layersInPool} pool layers); bytes = K + V + q + out`,
  policy: calibrated ? "calibrated" : "built-in",
  rows,
};
mkdirSync(outDir, { recursive: true });
const gpu = rt.info.name.includes("H100") ? "h100" : rt.info.name.includes("H200") ? "h200" : "gpu";
const base = `${outDir}/decode-${date.slice(0, 10)}-${gpu}`;
writeFileSync(`${base}.json`, JSON.stringify(result, null, 1));

const flashinfer = flashInferSteps(readFileSync(peersPath(result.device), "utf8"));
writeFileSync(`${base}.md`, report(result satisfies DecodeResult, flashinfer));
// The chart compares with FlashInfer's f16 kernels: the first dtype's rows.
writeFileSync(`${base}.svg`, chart({ ...result, rows: rows.filter((r) => r.dtype === dtypes[0]) }, flashinfer));
console.log(`wrote ${base}.json, .md and .svg`);
