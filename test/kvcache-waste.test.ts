// Paged allocation wastes at most one partial page per sequence; on the b128-serving lengths at page size
// 16 that must stay under the 4% of allocated slots that vLLM's PagedAttention reports.
import { expect, test } from "bun:test";
import { DEFAULT_WORKLOADS, measureWaste, workloadSteps } from "../bench/waste.ts";

test("waste on b128-serving at page size 16 is under 4% and equals the partial-page tails", () => {
  const steps = workloadSteps(DEFAULT_WORKLOADS, "b128-serving");
  const result = measureWaste("b128-serving", steps, 16);
  console.log(`b128-serving, page size 16: ${(100 * result.wasteFraction).toFixed(3)}% of allocated slots wasted`);
  // Independent arithmetic: each sequence wastes the tail of its last page.
  const tails = steps.flat().reduce((sum, n) => sum + ((16 - (n % 16)) % 16), 0);
  const allocated = steps.flat().reduce((sum, n) => sum + Math.ceil(n / 16) * 16, 0);
  expect(result.wastedSlots).toBe(tails);
  expect(result.allocatedSlots).toBe(allocated);
  expect(result.wasteFraction).toBeLessThan(0.04);
});
