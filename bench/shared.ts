// Shared-prefix decode benchmark: every step of bench/workloads/shared.json (rows that share pages through
// KVCache.fork) and of bench/workloads/decode.json (rows that share nothing), each with sharing on and off,
// timed as bench/decode.ts times a step (bench/timing.ts). Writes bench/results/shared-<date>-<device>.json
// in the fixed format of DESIGN.md, each row with "sharing" and "unique_kv_bytes", and a table with the bars.
//   bun bench/shared.ts [--out bench/results] [--reps 30] [--steps prefix-8k,b64-prefix16k/1,b8-zipf]
//                       [--on auto|always] [--backend cuda|cpu] [--quick]
// --quick: every length / 128, at most 3 entries per list (rows or forks), the first step of each workload,
// few repetitions: small enough for the CPU backend.
// --on: the setting of the "on" rows (default auto, the library's default; always forces the shared path).
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { type BatchSource, type DecodeEngine, type DeviceBuffer, openRuntime, type Plan } from "persistentkv";
import { randomHalves, rng, TestPool } from "persistentkv/testing";
import { commit } from "./meta";
import { type SharedResult, type SharedRow, sharedReport } from "./shared-report";
import {
  buildStep,
  distinctKvBytes,
  RandomKV,
  releaseStep,
  rowLengths,
  type SharedWorkload,
  type StepEntry,
  scaleStep,
  stepNeeds,
} from "./shared-steps";
import { planSharing, type SharedPrefix, sharingSettings, sharingSupported } from "./sharing";
import { cliArg, kernelSamples, median, readCeiling, wallUs } from "./timing";

const startedAt = performance.now();
const args = process.argv.slice(2);
const arg = (name: string, fallback: string) => cliArg(args, name, fallback);
const quick = args.includes("--quick");
const outDir = arg("--out", "bench/results");
const reps = Number(arg("--reps", quick ? "3" : "30"));
const planReps = quick ? 5 : 100;
const wall32Reps = quick ? 1 : 10;
const onSetting = arg("--on", "auto") as SharedPrefix;
const backend = arg("--backend", "cuda") as "cuda" | "cpu";
const filter = arg("--steps", "")
  .split(",")
  .filter((s) => s !== "");
const layersInPool = 4; // wall_us_32_layers cycles these, as bench/decode.ts does
const scale = quick ? 1 / 128 : 1; // a 2K prefix keeps one full shared page
const maxEntries = quick ? 3 : Infinity;
if (!["auto", "always"].includes(onSetting)) throw new Error(`--on ${onSetting}: use auto or always`);

/** One measured step: its rows' lengths, a workload's own name, and where its pages come from. */
interface Step {
  source: "shared" | "existing";
  workload: string;
  step: number;
  entries: StepEntry[];
}
const wanted = (workload: string, step: number) =>
  filter.length === 0 || filter.includes(workload) || filter.includes(`${workload}/${step}`);
function stepsOf(path: string, source: Step["source"]): { model: SharedWorkload["model"]; steps: Step[] } {
  const workloads: SharedWorkload[] = JSON.parse(readFileSync(path, "utf8")).workloads;
  const model = workloads[0]!.model;
  const steps: Step[] = [];
  for (const w of workloads) {
    if (JSON.stringify(w.model) !== JSON.stringify(model))
      throw new Error(`${path}: ${w.name} has another model shape`);
    w.steps.forEach((entries, step) => {
      if ((!quick || step === 0) && wanted(w.name, step))
        steps.push({ source, workload: w.name, step, entries: scaleStep(entries, scale, maxEntries) });
    });
  }
  return { model, steps };
}
const shared = stepsOf("bench/workloads/shared.json", "shared");
const existing = stepsOf("bench/workloads/decode.json", "existing");
if (JSON.stringify(shared.model) !== JSON.stringify(existing.model))
  throw new Error("shared.json and decode.json have different model shapes");
const m = shared.model;
const bytesPerToken = 2 * m.num_kv_heads * m.head_dim * 2; // K and V, 16-bit
const all = [...shared.steps, ...existing.steps];
if (all.length === 0) throw new Error(`--steps ${filter.join(",")} matches no step`);
const maxBatch = Math.max(...all.map((s) => rowLengths(s.entries).length));

using rt = openRuntime({ backend });
if (!sharingSupported(rt))
  throw new Error("this library refuses the engine setting sharedPrefix: shared-prefix decode is not in this build");
const ceiling = readCeiling(rt, quick ? 2 ** 24 : 2 ** 31);
const engineOf = (mode: SharedPrefix): DecodeEngine =>
  rt.createDecodeEngine({
    numQoHeads: m.num_qo_heads,
    numKvHeads: m.num_kv_heads,
    headDim: m.head_dim,
    pageSize: m.page_size,
    dtype: m.dtype,
    maxBatch,
    settings: sharingSettings(mode),
  });
const engines = [
  { sharing: "on" as const, setting: onSetting, engine: engineOf(onSetting) },
  { sharing: "off" as const, setting: "off" as const, engine: engineOf("off") },
];
for (const { sharing, setting, engine } of engines)
  console.log(
    `sharing ${sharing} (sharedPrefix "${setting}"): adaptive policy from ${engine.calibrated ? "the calibrated table" : "the built-in rule (no calibration stored for these settings)"}`,
  );
const ioBytes = maxBatch * m.num_qo_heads * m.head_dim * 2;
const q: DeviceBuffer = rt.allocDevice(ioBytes),
  out: DeviceBuffer = rt.allocDevice(ioBytes);
q.write(randomHalves(m.dtype, ioBytes / 2, rng(5), 2));
const rows: SharedRow[] = [];

/** Times one step with both settings and records a row for each. */
function measure<S>(step: Step, source: BatchSource<S>, seqs: readonly S[], distinctBytes: number): void {
  const measured: SharedRow[] = [];
  // Kernel times of the two settings interleaved in rounds, so that a drift of the GPU's clocks or
  // temperature over the run weighs on both alike.
  const plans: Plan[] = engines.map(({ engine }) => engine.plan(source, seqs)); // uploads the table once
  const samples: number[][] = engines.map(() => []);
  const rounds = 5;
  for (let round = 0; round < rounds; round++)
    engines.forEach(({ engine }, e) => {
      const plan = plans[e]!;
      if (round === 0) for (let i = 0; i < 3; i++) engine.run(plan, 0, q, out);
      samples[e]!.push(
        ...kernelSamples(rt, (i) => engine.run(plan, i % layersInPool, q, out), Math.ceil(reps / rounds)),
      );
    });
  for (const [e, { sharing, setting, engine }] of engines.entries()) {
    let plan: Plan = plans[e]!; // the timed plans below carry no deltas
    const planTimes: number[] = [];
    for (let i = 0; i < planReps; i++) {
      rt.synchronize();
      const t = performance.now();
      plan = engine.plan(source, seqs);
      planTimes.push(performance.now() - t);
    }
    const kernel = median(samples[e]!);
    const wall = (layers: number, n: number) =>
      wallUs(
        rt,
        () => {
          plan = engine.plan(source, seqs);
          for (let layer = 0; layer < layers; layer++) engine.run(plan, layer % layersInPool, q, out);
        },
        n,
      );
    const wall1 = wall(1, reps),
      wall32 = wall(32, wall32Reps);
    const { uniqueKvBytes, sharedTasks, sharedRows } = planSharing(plan);
    const io = 2 * plan.batch * m.num_qo_heads * m.head_dim * 2; // q and out
    const gbps = (plan.kvBytes + io) / kernel / 1e3,
      gbpsUnique = (uniqueKvBytes + io) / kernel / 1e3;
    measured.push({
      workload: step.workload,
      step: step.step,
      source: step.source,
      sharing,
      setting,
      policy: engine.policy,
      kernel: plan.kernel,
      batch: plan.batch,
      tokens: plan.totalTokens,
      kv_bytes: plan.kvBytes,
      unique_kv_bytes: uniqueKvBytes,
      distinct_kv_bytes: distinctBytes,
      kernel_us: +kernel.toFixed(2),
      wall_us: +wall1.toFixed(2),
      wall_us_32_layers: +wall32.toFixed(1),
      plan_us: +(median(planTimes) * 1000).toFixed(2),
      gbps: +gbps.toFixed(1),
      pct_ceiling: +((100 * gbps) / ceiling).toFixed(1),
      gbps_unique: +gbpsUnique.toFixed(1),
      pct_ceiling_unique: +((100 * gbpsUnique) / ceiling).toFixed(1),
      shared_tasks: sharedTasks,
      shared_rows: sharedRows,
      tasks: plan.numTasks,
      grid: plan.grid,
      max_splits: plan.maxSplits,
    });
  }
  const [on, off] = measured as [SharedRow, SharedRow];
  on.speedup = +(off.kernel_us / on.kernel_us).toFixed(3);
  for (const r of measured) {
    rows.push(r);
    console.log(
      `${r.workload} ${r.step} B${r.batch} ${r.sharing.padEnd(3)} ${r.kernel.padEnd(10)} ${r.kernel_us.toFixed(1).padStart(8)} us ` +
        `${r.pct_ceiling_unique.toFixed(1).padStart(5)}% unique ${r.pct_ceiling.toFixed(1).padStart(6)}% unshared  ` +
        `shared tasks ${r.shared_tasks}  plan ${r.plan_us} us${r.speedup ? `  speedup ${r.speedup}x` : ""}`,
    );
  }
}

// The shared steps on one KVCache sized for the largest, each step built by forks and released after.
if (shared.steps.length > 0) {
  const needs = shared.steps.map((s) => stepNeeds(s.entries, m.page_size));
  using cache = rt.createKVCache({
    numLayers: layersInPool,
    numPages: Math.max(...needs.map((n) => n.pages)),
    pageSize: m.page_size,
    numKvHeads: m.num_kv_heads,
    headDim: m.head_dim,
    dtype: m.dtype,
    maxSequences: Math.max(...needs.map((n) => n.sequences)),
    maxPagesPerSequence: Math.max(...needs.map((n) => n.maxPagesPerSequence)),
  });
  using kv = new RandomKV(rt, cache);
  for (const step of shared.steps) {
    const built = buildStep(cache, kv, step.entries);
    measure(step, cache, built.rows, distinctKvBytes(cache, built.rows, bytesPerToken));
    releaseStep(cache, built);
  }
}

// The existing steps as bench/decode.ts builds them: a pool of shuffled page ids, no page shared.
if (existing.steps.length > 0) {
  const lengths = existing.steps.map((s) => rowLengths(s.entries));
  const pool = new TestPool(
    rt,
    {
      numLayers: layersInPool,
      numPages: Math.max(...lengths.map((ls) => ls.reduce((n, l) => n + Math.ceil(l / m.page_size), 0))),
      pageSize: m.page_size,
      numKvHeads: m.num_kv_heads,
      headDim: m.head_dim,
      dtype: m.dtype,
      maxSequences: maxBatch,
      maxPagesPerSequence: Math.ceil(Math.max(...lengths.flat()) / m.page_size),
    },
    11,
    false,
  );
  existing.steps.forEach((step, i) => {
    pool.reset();
    const seqs = lengths[i]!.map((len) => pool.addSequence(len));
    measure(step, pool, seqs, lengths[i]!.reduce((n, l) => n + l, 0) * bytesPerToken);
  });
  pool.dispose();
}
for (const { engine } of engines) engine.dispose();
q.dispose();
out.dispose();

const date = new Date().toISOString();
const result: SharedResult = {
  device: rt.info.name,
  commit: commit(),
  date,
  ceiling_gbps: +ceiling.toFixed(1),
  timing:
    `CUDA events around one run, median of ${reps} launches, L2 flushed (256 MiB read) before each; ` +
    `wall: plan + runs + sync on the host clock, L2 flushed first, median of ${reps} (1 layer) / ${wall32Reps} (32 layers cycling ${layersInPool} pool layers); ` +
    `plan_us: host time of one plan (no table deltas), median of ${planReps}; bytes = K + V + q + out; ` +
    "shared steps on a KVCache (page ids in its allocation order), decode.json steps on shuffled page ids as bench/decode.ts" +
    (quick ? `; --quick: lengths x ${scale}, at most ${maxEntries} entries per list, first step of each workload` : ""),
  sharing: { on: onSetting, off: "off" },
  calibrated: { on: engines[0]!.engine.calibrated, off: engines[1]!.engine.calibrated },
  rows,
};
mkdirSync(outDir, { recursive: true });
const name = rt.info.name;
const device = rt.backend === "cpu" ? "cpu" : name.includes("H100") ? "h100" : name.includes("H200") ? "h200" : "gpu";
const base = `${outDir}/shared-${date.slice(0, 10)}-${device}`;
writeFileSync(`${base}.json`, JSON.stringify(result, null, 1));
writeFileSync(`${base}.md`, sharedReport(result));
console.log(`wrote ${base}.json and .md after ${((performance.now() - startedAt) / 1000).toFixed(0)} s`);
