// A small decode workload for compute-sanitizer (memcheck, racecheck): both kernels, splits merged in
// kernel, idle threads (g 7), every head dim, host-array and device-buffer runs, 16-bit and FP8 pages.
//   compute-sanitizer --tool memcheck --error-exitcode 1 bun test/gpu/sanitize.ts ['<engine settings JSON>']
// The optional argument (lib/engine.ts EngineSettings) forces a strategy onto these small steps, e.g.
// '{"claimMinTiles":1}' (claiming) or '{"tailMinSplits":0}' (the dynamic tail), or picks a body.
import { openRuntime } from "../../lib/runtime";
import { type DecodeCase, runCase, tolerance } from "../../lib/testing/decode-check";

const cases: DecodeCase[] = [
  { group: 4, numKvHeads: 2, headDim: 128, pageSize: 16, dtype: "f16", lengths: [1, 17, 700, 3000] },
  { group: 7, numKvHeads: 1, headDim: 64, pageSize: 1, dtype: "bf16", lengths: [5, 300] },
  { group: 16, numKvHeads: 1, headDim: 256, pageSize: 256, dtype: "f16", lengths: [600] },
  // FP8 pages: codes and scales through the cp.async pipeline (and at head dim 128 on sm_90+ bulk copies,
  // which AUTO takes where a row is longer than 4096 tokens: whole 8-row groups, rows of pages under 8
  // tokens, both tensor-core forms), every head dim, f16 and bf16 queries.
  { group: 4, numKvHeads: 2, headDim: 128, pageSize: 16, dtype: "fp8_e4m3", lengths: [1, 17, 700, 3000] },
  { group: 4, numKvHeads: 1, headDim: 128, pageSize: 8, dtype: "fp8_e4m3", lengths: [5000, 40] },
  { group: 12, numKvHeads: 1, headDim: 128, pageSize: 4, dtype: "fp8_e4m3", queryDtype: "bf16", lengths: [3, 99, 130] },
  { group: 7, numKvHeads: 1, headDim: 64, pageSize: 1, dtype: "fp8_e4m3", queryDtype: "bf16", lengths: [5, 300] },
  { group: 3, numKvHeads: 2, headDim: 256, pageSize: 256, dtype: "fp8_e4m3", lengths: [600] },
  { group: 16, numKvHeads: 1, headDim: 64, pageSize: 4, dtype: "fp8_e4m3", queryDtype: "bf16", lengths: [1, 999] },
];
const settings = process.argv[2] ? JSON.parse(process.argv[2]) : undefined;
// Bulk copies serve the tensor-core body (head dims up to 128; FP8 pages at 128 only): with the bulk loader
// asked for, the other cases are left out rather than refused.
const bulkServes = (c: DecodeCase) => (c.dtype === "fp8_e4m3" ? c.headDim === 128 : c.headDim <= 128);
using rt = openRuntime({ backend: "cuda" });
let bad = 0;
cases.forEach((c, i) => {
  if (settings?.loader === "bulk" && !bulkServes(c))
    return console.log(`g${c.group} d${c.headDim} p${c.pageSize}: no bulk loader`);
  for (const r of runCase(rt, { ...c, settings }, ["baseline", "persistent"], i % 2 === 1)) {
    const ok = r.unwritten === 0 && r.relError < tolerance(c.dtype, c.queryDtype);
    if (!ok) bad++;
    console.log(
      `g${c.group} d${c.headDim} p${c.pageSize} ${r.kernel} ${r.loader}: rel ${r.relError.toExponential(2)} ${ok ? "ok" : "FAIL"}`,
    );
  }
});
process.exit(bad ? 1 : 0);
