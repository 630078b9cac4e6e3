// One workload step run a few times, for ncu: bun bench/profile.ts <workload> <step> <policy>
import { readFileSync } from "node:fs";
import { type DecodePolicy, openRuntime } from "persistentkv";
import { randomHalves, rng, TestPool } from "persistentkv/testing";

const [name = "b4-long", stepArg = "0", policy = "persistent"] = process.argv.slice(2);
const w = JSON.parse(readFileSync("bench/workloads/decode.json", "utf8")).workloads.find(
  (x: { name: string }) => x.name === name,
);
const m = w.model,
  lengths: number[] = w.steps[Number(stepArg)];
using rt = openRuntime({ backend: "cuda" });
const pages = lengths.reduce((n, l) => n + Math.ceil(l / m.page_size), 0);
const pool = new TestPool(
  rt,
  {
    numLayers: 1,
    numPages: pages,
    pageSize: m.page_size,
    numKvHeads: m.num_kv_heads,
    headDim: m.head_dim,
    dtype: m.dtype,
    maxSequences: lengths.length,
    maxPagesPerSequence: Math.ceil(Math.max(...lengths) / m.page_size),
  },
  3,
  false,
);
const engine = rt.createDecodeEngine({
  numQoHeads: m.num_qo_heads,
  numKvHeads: m.num_kv_heads,
  headDim: m.head_dim,
  pageSize: m.page_size,
  dtype: m.dtype,
  maxBatch: lengths.length,
});
const seqs = lengths.map((l) => pool.addSequence(l));
const plan = engine.plan(pool, seqs, { policy: policy as DecodePolicy });
const bytes = lengths.length * m.num_qo_heads * m.head_dim * 2;
const q = rt.allocDevice(bytes),
  out = rt.allocDevice(bytes);
q.write(randomHalves(m.dtype, bytes / 2, rng(1), 2));
for (let i = 0; i < 3; i++) {
  rt.flushL2();
  engine.run(plan, 0, q, out);
}
rt.synchronize();
console.log(`${name} ${stepArg} ${plan.kernel}: tasks ${plan.numTasks} grid ${plan.grid} splits ${plan.maxSplits}`);
