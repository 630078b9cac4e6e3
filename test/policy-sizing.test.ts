// Calibration's sizing for every supported shape: the pools fit the native limits and the memory share,
// every cell's steps fit their pool, and the bytes read (what its time scales with) stay alike across shapes.
import { describe, expect, test } from "bun:test";
import {
  MAX_SLOTS,
  MAX_STEP_BYTES,
  MAX_TABLE_ENTRIES,
  type ModelShape,
  planCalibration,
  TABLE_BUDGET,
} from "../lib/policy/sizing";
import { BATCH_BUCKETS, batchBucket, cellStep, TOKEN_BUCKETS, tokenBucket } from "../lib/policy/table";

const H200_MEMORY = 150_000_000_000; // 139.8 GiB, as the H200 reports it
const options = { maxTokens: 2 ** 21, totalMemory: H200_MEMORY, rounds: 15 };
// The default shape's plan reads this much in about 2 s on the H200 (one 4 GiB step's share: ~1 ms a launch).
const DEFAULT_BYTES = planCalibration(
  { numQoHeads: 32, numKvHeads: 8, headDim: 128, pageSize: 16, dtype: "f16" },
  options,
).bytesRead;

// Sizing depends on the bytes of a token and the page size; the shapes cover every group size (1-16, MHA
// included), head dim, page size and dtype, and the smallest and largest tokens of each.
const shapes: ModelShape[] = [];
for (let group = 1; group <= 16; group++)
  shapes.push({ numQoHeads: 8 * group, numKvHeads: 8, headDim: 128, pageSize: 16, dtype: "f16" });
for (const numKvHeads of [1, 8, 32])
  for (const headDim of [64, 128, 256])
    for (let pageSize = 1; pageSize <= 256; pageSize *= 2)
      for (const dtype of ["f16", "bf16"] as const)
        shapes.push({ numQoHeads: numKvHeads === 32 ? 32 : 4 * numKvHeads, numKvHeads, headDim, pageSize, dtype });
const plans = shapes.map((shape) => ({ shape, plan: planCalibration(shape, options) }));

describe("every supported shape", () => {
  test("fits the native pool limits, the memory share and the table budget", () => {
    for (const { shape, plan } of plans) {
      expect(plan.tokenBytes).toBe(4 * shape.numKvHeads * shape.headDim);
      expect(plan.maxTokens * plan.tokenBytes).toBeLessThanOrEqual(MAX_STEP_BYTES);
      expect(plan.pools.length).toBeGreaterThan(0);
      expect(plan.pools.length).toBeLessThanOrEqual(8);
      for (const pool of plan.pools) {
        const entries = pool.maxSequences * pool.maxPagesPerSequence;
        expect(entries).toBeLessThanOrEqual(MAX_TABLE_ENTRIES);
        // over the budget only for a pool of one run that needs it alone
        if (entries > TABLE_BUDGET) {
          const widest = Math.max(...pool.cells.flatMap((c) => c.steps.map((s) => s.width)));
          expect(pool.cells[0]!.batch * widest).toBeGreaterThan(TABLE_BUDGET / 2);
        }
        expect(pool.numPages * shape.pageSize).toBeLessThanOrEqual(MAX_SLOTS);
        expect(pool.numPages * shape.pageSize * plan.tokenBytes).toBeLessThanOrEqual(H200_MEMORY / 4);
        for (const cell of pool.cells) {
          expect(cell.batch).toBeLessThanOrEqual(pool.maxSequences);
          for (const step of cell.steps) {
            expect(step.lengths.length).toBe(cell.batch);
            expect(step.lengths.reduce((a, n) => a + n, 0)).toBe(cell.tokens);
            expect(step.width).toBeLessThanOrEqual(pool.maxPagesPerSequence);
            expect(step.pages).toBeLessThanOrEqual(pool.numPages);
          }
        }
      }
    }
  });

  test("measures the small and middle cells of every batch, up to the step cap", () => {
    for (const { plan } of plans) {
      const cells = plan.pools.flatMap((p) => p.cells);
      const measured = new Set(cells.map((c) => c.b * TOKEN_BUCKETS + c.t));
      expect(measured.size).toBe(cells.length); // each cell once
      for (const c of cells) expect([batchBucket(c.batch), tokenBucket(c.tokens)]).toEqual([c.b, c.t]);
      for (let b = 0; b < BATCH_BUCKETS; b++)
        for (let t = 0; t < TOKEN_BUCKETS; t++) {
          const { batch, tokens } = cellStep(b, t);
          const fits = tokens >= batch && tokens <= plan.maxTokens;
          expect(measured.has(b * TOKEN_BUCKETS + t)).toBe(fits);
        }
      // at least steps of 128K tokens (the largest single requests and 256 MiB+ steps of every shape)
      expect(plan.maxTokens).toBeGreaterThanOrEqual(2 ** 17);
    }
  });

  test("reads no more than the default shape, so the calibration time stays alike", () => {
    // 1% over for tokens that do not divide the step cap as evenly
    for (const { plan } of plans) expect(plan.bytesRead).toBeLessThanOrEqual(1.01 * DEFAULT_BYTES);
  });

  test("times each batch of more than one row on skewed and on equal rows", () => {
    const plan = planCalibration({ numQoHeads: 8, numKvHeads: 8, headDim: 64, pageSize: 1, dtype: "bf16" }, options);
    for (const cell of plan.pools.flatMap((p) => p.cells)) {
      expect(cell.steps.map((s) => s.kind)).toEqual(cell.batch > 1 ? ["skewed", "uniform"] : ["skewed"]);
      const uniform = cell.steps[1]?.lengths;
      if (uniform) expect(Math.max(...uniform) - Math.min(...uniform)).toBeLessThanOrEqual(1);
    }
  });
});

test("page size 1 at the default heads splits into pools that the native limit accepts", () => {
  const plan = planCalibration({ numQoHeads: 32, numKvHeads: 8, headDim: 128, pageSize: 1, dtype: "f16" }, options);
  expect(plan.pools.length).toBeGreaterThan(1);
  // one table for all its cells would need the widest row times 1024 rows
  const widest = Math.max(...plan.pools.map((p) => p.maxPagesPerSequence));
  expect(widest * 1024).toBeGreaterThan(MAX_TABLE_ENTRIES);
});

test("a small device caps the steps by its memory", () => {
  const plan = planCalibration(
    { numQoHeads: 32, numKvHeads: 8, headDim: 128, pageSize: 16, dtype: "f16" },
    { ...options, totalMemory: 2 ** 32 },
  );
  expect(plan.maxTokens).toBe(2 ** 30 / 4096);
  for (const pool of plan.pools) expect(pool.numPages * 16 * plan.tokenBytes).toBeLessThanOrEqual(2 ** 30);
});
