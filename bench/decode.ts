// Decode kernel benchmark over the shared workloads: every step with each policy, timed as in
// bench/workloads/peers-h100.md (CUDA events, median of N launches, L2 flushed before each launch).
//   bun bench/decode.ts [--workloads bench/workloads/decode.json] [--out bench/results] [--reps 30] [--only b1-bucketed]
import { execSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { DecodeEngine, type DecodePolicy } from "../lib/engine";
import { openRuntime } from "../lib/runtime";
import { randomHalves, rng, TestPool } from "../test/support/pool";

const args = process.argv.slice(2);
const arg = (name: string, fallback: string) => (args.includes(name) ? args[args.indexOf(name) + 1]! : fallback);
const workloadsPath = arg("--workloads", "bench/workloads/decode.json");
const outDir = arg("--out", "bench/results");
const reps = Number(arg("--reps", "30"));
const only = arg("--only", "");
const layersInPool = 4; // wall_us_32_layers cycles these: big steps leave L2 cold anyway

interface Workload {
  name: string;
  model: { num_qo_heads: number; num_kv_heads: number; head_dim: number; page_size: number; dtype: "f16" | "bf16" };
  steps: number[][];
}
const workloads: Workload[] = JSON.parse(readFileSync(workloadsPath, "utf8")).workloads.filter(
  (w: Workload) => !only || w.name === only,
);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

using rt = openRuntime({ backend: "cuda" });
const ceiling = rt.probeReadBandwidth({ bytes: 2 ** 31, iterations: 20 });
console.log(`${rt.info.name}: streaming-read ceiling ${ceiling.toFixed(1)} GB/s`);

// One pool for every workload of a model shape: pages for the largest step, page ids shuffled.
const m = workloads[0]!.model;
for (const w of workloads)
  if (JSON.stringify(w.model) !== JSON.stringify(m)) throw new Error(`workload ${w.name} has another model shape`);
const maxBatch = Math.max(...workloads.flatMap((w) => w.steps.map((s) => s.length)));
const maxLen = Math.max(...workloads.flatMap((w) => w.steps.flat()));
const maxPages = Math.max(...workloads.flatMap((w) => w.steps.map((s) => s.reduce((n, l) => n + Math.ceil(l / m.page_size), 0))));
const t0 = performance.now();
const pool = new TestPool(
  rt,
  {
    numLayers: layersInPool, numPages: maxPages, pageSize: m.page_size, numKvHeads: m.num_kv_heads, headDim: m.head_dim,
    dtype: m.dtype, maxSequences: maxBatch, maxPagesPerSequence: Math.ceil(maxLen / m.page_size),
  },
  11,
  false,
);
console.log(`pool: ${maxPages} pages x ${layersInPool} layers filled in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
const engine = new DecodeEngine(rt, {
  numQoHeads: m.num_qo_heads, numKvHeads: m.num_kv_heads, headDim: m.head_dim, pageSize: m.page_size, dtype: m.dtype,
  maxBatch,
});
const ioBytes = maxBatch * m.num_qo_heads * m.head_dim * 2;
const q = rt.allocDevice(ioBytes), out = rt.allocDevice(ioBytes);
q.write(randomHalves(m.dtype, ioBytes / 2, rng(5), 2));
const start = rt.createEvent(), stop = rt.createEvent();

const rows: Record<string, unknown>[] = [];
const policies: DecodePolicy[] = ["baseline", "persistent", "adaptive"];
for (const w of workloads) {
  w.steps.forEach((lengths, step) => {
    pool.reset();
    const seqs = lengths.map((len) => pool.addSequence(len));
    engine.plan(pool, seqs); // uploads the table once; the timed plans below carry no deltas
    for (const policy of policies) {
      let plan = engine.plan(pool, seqs, { policy });
      for (let i = 0; i < 3; i++) engine.run(plan, 0, q, out);
      const kernelMs: number[] = [];
      for (let i = 0; i < reps; i++) {
        rt.flushL2();
        start.record();
        engine.run(plan, i % layersInPool, q, out);
        stop.record();
        stop.synchronize();
        kernelMs.push(stop.elapsedSince(start));
      }
      // Synchronized wall time as the serving loop sees it: plan + upload + run(s) + sync, L2 cold.
      const wall = (layers: number, n: number) => {
        const times: number[] = [];
        for (let i = 0; i < n; i++) {
          rt.flushL2();
          rt.synchronize();
          const t = performance.now();
          plan = engine.plan(pool, seqs, { policy });
          for (let layer = 0; layer < layers; layer++) engine.run(plan, layer % layersInPool, q, out);
          rt.synchronize();
          times.push(performance.now() - t);
        }
        return median(times) * 1000;
      };
      const wallUs = wall(1, reps), wall32 = wall(32, 10);
      const kernelUs = median(kernelMs) * 1000;
      const bytes = plan.kvBytes + 2 * lengths.length * m.num_qo_heads * m.head_dim * 2; // K, V, q, out
      const gbps = bytes / kernelUs / 1e3;
      rows.push({
        workload: w.name, step, policy, kernel: plan.kernel, batch: lengths.length, tokens: plan.totalTokens,
        kv_bytes: plan.kvBytes, kernel_us: +kernelUs.toFixed(2), wall_us: +wallUs.toFixed(2),
        wall_us_32_layers: +wall32.toFixed(1), gbps: +gbps.toFixed(1), pct_ceiling: +((100 * gbps) / ceiling).toFixed(1),
        tasks: plan.numTasks, grid: plan.grid, max_splits: plan.maxSplits,
      });
      console.log(
        `${w.name} ${step} ${policy.padEnd(10)} ${plan.kernel.padEnd(10)} ${kernelUs.toFixed(1).padStart(8)} us ` +
          `${((100 * gbps) / ceiling).toFixed(1).padStart(5)}%  wall ${wallUs.toFixed(1)} us, 32 layers ${wall32.toFixed(0)} us` +
          `  tasks ${plan.numTasks} grid ${plan.grid} splits ${plan.maxSplits}`,
      );
    }
  });
}

// Host cost of plan (FFI + describeBatch + workqueue + async upload), without and with block-table deltas.
const planCost: Record<string, number> = {};
for (const batch of [8, 256].filter((b) => b <= maxBatch)) {
  pool.reset();
  const seqs = Array.from({ length: batch }, (_, i) => pool.addSequence(500 + ((i * 977) % 4000)));
  engine.plan(pool, seqs, { policy: "persistent" });
  for (const deltas of [false, true]) {
    const times: number[] = [];
    for (let i = 0; i < 2000; i++) {
      if (deltas) for (let r = i % 16; r < batch; r += 16) pool.dirtyFrom[seqs[r]!.row] = seqs[r]!.pages.length - 1;
      const t = performance.now();
      engine.plan(pool, seqs, { policy: "persistent" });
      times.push(performance.now() - t);
    }
    planCost[`b${batch}${deltas ? "_deltas" : ""}_us`] = +(median(times) * 1000).toFixed(2);
  }
  rt.synchronize();
}
console.log("plan cost (median, us):", planCost);

let commit = "unknown";
try {
  commit = execSync("git rev-parse HEAD", { stdio: ["ignore", "pipe", "ignore"] }).toString().trim();
} catch {}
const date = new Date().toISOString();
const result = {
  device: rt.info.name, commit, date, ceiling_gbps: +ceiling.toFixed(1),
  timing: `CUDA events around one run, median of ${reps} launches, L2 flushed (256 MiB read) before each; wall: plan + runs + sync on the host clock, L2 flushed first, median of ${reps} (1 layer) / 10 (32 layers cycling ${layersInPool} pool layers); bytes = K + V + q + out`,
  plan_cost_us: planCost,
  rows,
};
mkdirSync(outDir, { recursive: true });
const gpu = rt.info.name.includes("H100") ? "h100" : rt.info.name.includes("H200") ? "h200" : "gpu";
const base = `${outDir}/decode-${date.slice(0, 10)}-${gpu}`;
writeFileSync(`${base}.json`, JSON.stringify(result, null, 1));

// Markdown: one line per step with both kernels side by side.
const md = [
  `# Decode kernels on ${rt.info.name} (${date.slice(0, 10)}, commit ${commit.slice(0, 10)})`,
  "",
  `Ceiling ${ceiling.toFixed(1)} GB/s. ${result.timing}. Plan cost (us): ${JSON.stringify(planCost)}.`,
  "",
  "| workload | step | batch | tokens | baseline us | % ceil | persistent us | % ceil | pers/base speedup | adaptive kernel | adaptive us | wall us (1 layer, best) | wall us (32 layers, best) |",
  "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
];
for (let i = 0; i < rows.length; i += 3) {
  type Row = { [key: string]: any };
  const b = rows[i] as Row, p = rows[i + 1] as Row, a = rows[i + 2] as Row;
  md.push(
    `| ${b.workload} | ${b.step} | ${b.batch} | ${b.tokens} | ${b.kernel_us} | ${b.pct_ceiling} | ${p.kernel_us} | ${p.pct_ceiling} | ` +
      `${(b.kernel_us / p.kernel_us).toFixed(2)} | ${a.kernel} | ${a.kernel_us} | ${Math.min(b.wall_us, p.wall_us)} | ` +
      `${Math.min(b.wall_us_32_layers, p.wall_us_32_layers)} |`,
  );
}
writeFileSync(`${base}.md`, md.join("\n") + "\n");
console.log(`wrote ${base}.json and .md`);
