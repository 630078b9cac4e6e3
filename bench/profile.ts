// One workload step run a few times, for ncu:
//   bun bench/profile.ts <workload> <step> <policy> [--dtype f16|fp8_e4m3] [--q-len N]
// --dtype: the KV storage type (q and out keep the workload's 16-bit type); --q-len: query tokens per row
// (the multi-query kernels for N > 1).
import { readFileSync } from "node:fs";
import { type DecodePolicy, type KVDType, openRuntime } from "persistentkv";
import { randomHalves, rng, TestPool } from "persistentkv/testing";
import { cliArg } from "./timing";

const args = process.argv.slice(2);
const [name = "b4-long", stepArg = "0", policy = "persistent"] = args.filter(
  (a, i) => !a.startsWith("--") && !args[i - 1]?.startsWith("--"),
);
const w = JSON.parse(readFileSync("bench/workloads/decode.json", "utf8")).workloads.find(
  (x: { name: string }) => x.name === name,
);
const m = w.model,
  lengths: number[] = w.steps[Number(stepArg)];
const dtype = cliArg(args, "--dtype", m.dtype) as KVDType;
const qLen = Number(cliArg(args, "--q-len", "1"));
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
    dtype,
    queryDtype: m.dtype,
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
  dtype,
  queryDtype: m.dtype,
  maxBatch: lengths.length,
});
const seqs = lengths.map((l) => pool.addSequence(l));
const qLens = lengths.map((l) => Math.min(qLen, l));
const plan = engine.plan(pool, seqs, qLen > 1 ? { qLens } : { policy: policy as DecodePolicy });
const bytes = qLens.reduce((a, b) => a + b, 0) * m.num_qo_heads * m.head_dim * 2;
const q = rt.allocDevice(bytes),
  out = rt.allocDevice(bytes);
q.write(randomHalves(m.dtype, bytes / 2, rng(1), 2));
for (let i = 0; i < 3; i++) {
  rt.flushL2();
  engine.run(plan, 0, q, out);
}
rt.synchronize();
console.log(
  `${name} ${stepArg} ${dtype} q ${qLen} ${plan.kernel}: tasks ${plan.numTasks} grid ${plan.grid} splits ${plan.maxSplits}`,
);
