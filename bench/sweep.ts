// GPU correctness sweep: both decode kernels against pkv_reference_decode on fresh random data.
// Covers every group size 1..16, head dims 64/128/256, page sizes 1/16/64/256, f16 and bf16, lengths at
// page and split edges, 128K and 256K contexts, batches of 1..1024 mixing short and long rows.
//   bun bench/sweep.ts [--out sweep.json] [--quick] [--cpu] [--fp8] [--settings '{"claimMinTiles":1}']
// --settings: engine settings (lib/engine.ts EngineSettings) for every case, e.g. to force claiming
// ({"claimMinTiles":1}) or the dynamic tail ({"tailMinSplits":0}) onto the sweep's mostly small steps.
import { writeFileSync } from "node:fs";
import { openRuntime } from "persistentkv";
import { type DecodeCase, runCase, tolerance } from "persistentkv/testing";

const args = process.argv.slice(2);
const outPath = args.includes("--out") ? args[args.indexOf("--out") + 1] : undefined;
const quick = args.includes("--quick");
const backend = args.includes("--cpu") ? "cpu" : "cuda"; // --cpu: a dry run of the sweep itself
const settings = args.includes("--settings") ? JSON.parse(args[args.indexOf("--settings") + 1]!) : undefined;
// --fp8: every case on FP8 pages, its 16-bit dtype as the query type.
const fp8 = args.includes("--fp8");

const dims = [64, 128, 256],
  pageSizes = [1, 16, 64, 256],
  dtypes = ["f16", "bf16"] as const;
const cases: (DecodeCase & { name: string; device?: boolean })[] = [];
for (let i = 0; i < (quick ? 16 : 48); i++) {
  const d = dims[i % 3]!,
    ps = pageSizes[Math.floor(i / 3) % 4]!,
    dtype = dtypes[Math.floor(i / 12) % 2]!;
  const g = 1 + (i % 16);
  // Page edges, the minimum split (64) and baseline chunk (128) edges, and a few thousand tokens.
  const lengths = [1, 15, 16, 17, ps - 1 || 2, ps, ps + 1, 63, 64, 65, 127, 128, 129, 1000 + 97 * i, 3000 + 13 * i];
  cases.push({
    name: `g${g} d${d} p${ps} ${dtype}`,
    group: g,
    numKvHeads: 2,
    headDim: d,
    pageSize: ps,
    dtype,
    lengths,
    seed: 100 + i,
    device: i % 2 === 1,
  });
}
cases.push({
  name: "128K + short rows, g4 d128 p16",
  group: 4,
  numKvHeads: 2,
  headDim: 128,
  pageSize: 16,
  dtype: "f16",
  lengths: [1, 2, 131072, 5],
});
cases.push({
  name: "256K, g8 d64 p64 bf16",
  group: 8,
  numKvHeads: 1,
  headDim: 64,
  pageSize: 64,
  dtype: "bf16",
  lengths: [262144],
});
cases.push({
  name: "256K, g4 d128 p1",
  group: 4,
  numKvHeads: 1,
  headDim: 128,
  pageSize: 1,
  dtype: "f16",
  lengths: [262144, 3],
});
cases.push({
  name: "B64 mixed, g5 d128 p16",
  group: 5,
  numKvHeads: 2,
  headDim: 128,
  pageSize: 16,
  dtype: "f16",
  lengths: Array.from({ length: 64 }, (_, i) => (i % 7 === 0 ? 20000 + i : 1 + ((i * 131) % 900))),
});
cases.push({
  name: "B1024 short, g4 d128 p16",
  group: 4,
  numKvHeads: 1,
  headDim: 128,
  pageSize: 16,
  dtype: "f16",
  lengths: Array.from({ length: 1024 }, (_, i) => 1 + ((i * 61) % 300)),
});

if (fp8)
  for (const c of cases) {
    c.queryDtype = c.dtype as "f16" | "bf16";
    c.dtype = "fp8_e4m3";
    c.name = `${c.name} fp8`;
  }
using rt = openRuntime({ backend });
const rows = [];
let failures = 0;
console.log(`device: ${rt.info.name}${settings ? `, settings ${JSON.stringify(settings)}` : ""}`);
console.log("case | kernel | tasks | splits | rel err | lse err | unwritten | ok");
for (const c of cases) {
  const t0 = performance.now();
  for (const r of runCase(rt, { ...c, settings }, ["baseline", "persistent"], c.device ?? false)) {
    const ok = r.unwritten === 0 && r.relError < tolerance(c.dtype, c.queryDtype) && r.lseError < 2e-3;
    if (!ok) failures++;
    rows.push({ case: c.name, batch: c.lengths.length, device: !!c.device, ...r, ok });
    console.log(
      `${c.name} | ${r.kernel} | ${r.numTasks} | ${r.maxSplits} | ${r.relError.toExponential(2)} | ` +
        `${r.lseError.toExponential(2)} | ${r.unwritten} | ${ok ? "ok" : "FAIL"}`,
    );
  }
  if (performance.now() - t0 > 20000) console.log(`  (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
}
console.log(`${rows.length - failures}/${rows.length} passed`);
if (outPath)
  writeFileSync(outPath, JSON.stringify({ device: rt.info.name, date: new Date().toISOString(), rows }, null, 1));
process.exit(failures ? 1 : 0);
