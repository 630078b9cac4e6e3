// A small shared-prefix workload for compute-sanitizer (memcheck, racecheck): random trees of forks and
// prefix hits with sharedPrefix "always" (shared tasks, decode over the rows' own tokens, combine), host
// arrays, every member-tile shape from group 1 to 16; exits 1 when a step differs from the reference.
//   compute-sanitizer --tool memcheck --error-exitcode 1 bun test/gpu/sanitize-shared.ts
import { openRuntime } from "../../lib/runtime";
import { buildTree, checkStep, LSE_TOLERANCE, outputTolerance, type TreeCase } from "../support/shared-prefix";

const base: TreeCase = {
  group: 4,
  numKvHeads: 2,
  headDim: 128,
  pageSize: 16,
  dtype: "f16",
  seed: 1,
  groups: 2,
  maxPrefix: 1500,
  prefixHits: 3,
  loners: 2,
};
const cases: TreeCase[] = [
  base,
  { ...base, seed: 2, group: 1, headDim: 64, pageSize: 1, maxPrefix: 300, dtype: "bf16" },
  { ...base, seed: 3, group: 16, numKvHeads: 1, pageSize: 64, maxPrefix: 3000 },
];
using rt = openRuntime({ backend: "cuda" });
let failed = false;
for (const c of cases) {
  const tree = buildTree(rt, c);
  const r = checkStep(rt, c, tree, { sharedPrefix: "always" });
  const ok = r.plan.sharedTasks > 0 && r.relError < outputTolerance(c.dtype) && r.lseError < LSE_TOLERANCE;
  console.log(`seed ${c.seed}: ${r.plan.sharedTasks} shared tasks, rel error ${r.relError}, lse error ${r.lseError}`);
  failed ||= !ok;
  tree.cache.dispose();
}
process.exit(failed ? 1 : 0);
