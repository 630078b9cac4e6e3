// A small multi-query workload for compute-sanitizer (memcheck, racecheck, synccheck): speculative rows on
// the decode kernels (static splits, claimed tiles, the dynamic tail, causal edges), the multi-query
// kernels' small-rows warp split and 64-row split, wide tiles, split tiles merged, idle warps (g 3 and
// 7), every head dim, host-array and device-buffer runs.
//   compute-sanitizer --tool memcheck --error-exitcode 1 bun test/gpu/sanitize-multiquery.ts
import type { EngineSettings } from "../../lib/engine";
import { openRuntime } from "../../lib/runtime";
import { tolerance } from "../../lib/testing/decode-check";
import { type MultiqueryCase, runMultiqueryCase } from "../../lib/testing/multiquery-check";

// Speculative rows (q_len x group <= 16) on the decode kernels, with each few-row strategy forced on.
const speculative: MultiqueryCase = {
  group: 4,
  numKvHeads: 2,
  headDim: 128,
  pageSize: 16,
  dtype: "f16",
  rows: [
    { length: 20_002, qLen: 4 },
    { length: 3, qLen: 3 },
    { length: 700, qLen: 2 },
    { length: 1, qLen: 1 },
  ],
};
const decodeRuns: [MultiqueryCase, EngineSettings | undefined][] = [
  [speculative, undefined],
  [speculative, { claimMinTiles: 1, tailPercent: 0 }],
  [speculative, { tailPercent: 30, tailMinSplits: 0 }],
  [
    { ...speculative, group: 1, headDim: 64, pageSize: 1, dtype: "bf16", rows: [{ length: 5000, qLen: 16 }] },
    undefined,
  ],
];

const cases: MultiqueryCase[] = [
  {
    group: 4,
    numKvHeads: 2,
    headDim: 128,
    pageSize: 16,
    dtype: "f16",
    rows: [
      { length: 17, qLen: 1 },
      { length: 3000, qLen: 4 },
      { length: 200, qLen: 16 },
      { length: 130, qLen: 70 },
    ],
  },
  {
    group: 7,
    numKvHeads: 1,
    headDim: 64,
    pageSize: 1,
    dtype: "bf16",
    rows: [
      { length: 300, qLen: 5 },
      { length: 9, qLen: 9 },
    ],
  },
  {
    group: 3,
    numKvHeads: 1,
    headDim: 256,
    pageSize: 256,
    dtype: "f16",
    rows: [
      { length: 700, qLen: 40 },
      { length: 4, qLen: 1 },
    ],
  },
  // Wide tiles (the warpgroup kernel on Hopper): full and partial 128-row tiles, split and merged, and
  // unsplit ones that write the output.
  {
    group: 4,
    numKvHeads: 2,
    headDim: 128,
    pageSize: 16,
    dtype: "f16",
    rows: [
      { length: 6000, qLen: 40 },
      { length: 300, qLen: 300 },
      { length: 50, qLen: 1 },
    ],
  },
  {
    group: 3,
    numKvHeads: 1,
    headDim: 64,
    pageSize: 8,
    dtype: "bf16",
    rows: [{ length: 2100, qLen: 700 }],
  },
];
using rt = openRuntime({ backend: "cuda" });
let bad = 0;
const runs = [...decodeRuns, ...cases.map((c): [MultiqueryCase, undefined] => [c, undefined])];
runs.forEach(([c, settings], i) => {
  // A forced strategy is the persistent kernel's: the default policy may take the baseline for so small a step.
  const r = runMultiqueryCase(rt, c, { device: i % 2 === 1, settings, policy: settings ? "persistent" : undefined });
  const ok = r.unwritten === 0 && r.relError < tolerance(c.dtype);
  if (!ok) bad++;
  console.log(
    `g${c.group} d${c.headDim} p${c.pageSize} ${r.kernel} splits ${r.maxSplits}: rel ${r.relError.toExponential(2)} ${ok ? "ok" : "FAIL"}`,
  );
});
process.exit(bad ? 1 : 0);
