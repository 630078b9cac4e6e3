// What a calibration measures and the pools it measures in: the cells of the policy table that fit this
// shape and device, each cell's synthetic steps, and KV caches sized from those steps alone. Pure (no GPU),
// so the sizing of every supported shape is tested on the CPU.
import type { DType, KVDType } from "../dtype";
import { seeded } from "../random";
import { BATCH_BUCKETS, cellStep, TOKEN_BUCKETS } from "./table";

/** The KV shape calibration measures (a model's attention layer). */
export interface ModelShape {
  numQoHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  dtype: KVDType;
  queryDtype?: DType;
}

/**
 * How a cell's rows are spread. A table cell serves every batch with its row count and total tokens, so a
 * kernel is chosen only if it holds on both ends: a serving batch's skew (log-normal lengths) and equal rows.
 */
export type StepKind = "skewed" | "uniform";

export interface CalibrationStep {
  kind: StepKind;
  /** Row lengths, in tokens; they sum to the cell's tokens. */
  lengths: number[];
  /** Pages the rows hold (each row's last page may be partial). */
  pages: number;
  /** Pages of the longest row: the block-table width it needs. */
  width: number;
}

export interface CalibrationCell {
  /** Batch and token bucket of the table cell. */
  b: number;
  t: number;
  batch: number;
  tokens: number;
  steps: CalibrationStep[];
}

/** One KV cache and the cells measured in it: every cell reuses the same pages, one cell at a time. */
export interface CalibrationPool {
  numPages: number;
  maxSequences: number;
  maxPagesPerSequence: number;
  cells: CalibrationCell[];
}

export interface CalibrationPlan {
  /** K and V bytes of one token in one layer. */
  tokenBytes: number;
  /** The largest step measured, in tokens. */
  maxTokens: number;
  pools: CalibrationPool[];
  /** K/V bytes all timed launches read (warm-up and paired rounds): what the calibration's time scales with. */
  bytesRead: number;
}

/** The native pool's limits (pkv_kvpool_create): block-table entries, and slots addressed in int32. */
export const MAX_TABLE_ENTRIES = 0x7fffffff >> 2;
export const MAX_SLOTS = 0x7fffffff;
/** Rows of the largest batch bucket: the engine's maxBatch and the tallest pool. */
export const MAX_CALIBRATION_BATCH = 2 ** (BATCH_BUCKETS - 1);
/**
 * The largest step measured, in K/V bytes: over twice the largest shared step (b4-long, about 2 GB). Both
 * kernels stream such steps at the bandwidth limit, where the built-in rule serves; the cap keeps a
 * calibration's time alike for every shape (a 32 KiB token of 32 heads of 256 would otherwise read 8x more).
 */
export const MAX_STEP_BYTES = 2 ** 32;
/**
 * Block-table entries one pool aims at (128 MiB of pinned table, and as much on the device): a table is
 * allocated and cleared whole, so a wide pool for few long rows and a tall one for many short rows cost
 * less than one table that is both.
 */
export const TABLE_BUDGET = 2 ** 25;
/** Share of device memory one calibration pool may take. */
const MEMORY_SHARE = 4;
const LENGTHS_SEED = 20261122;

export interface SizingOptions {
  /** Largest step requested, in tokens. */
  maxTokens: number;
  /** Device memory in bytes. */
  totalMemory: number;
  /** Paired rounds per step (each times both kernels), after one warm-up launch of each. */
  rounds: number;
}

export function planCalibration(shape: ModelShape, options: SizingOptions): CalibrationPlan {
  const P = shape.pageSize;
  const tokenBytes = 2 * shape.numKvHeads * shape.headDim * 2;
  const poolBytes = options.totalMemory / MEMORY_SHARE;
  const maxTokens = Math.min(options.maxTokens, Math.floor(Math.min(poolBytes, MAX_STEP_BYTES) / tokenBytes));
  const random = seeded(LENGTHS_SEED);
  const cells: CalibrationCell[] = [];
  for (let b = 0; b < BATCH_BUCKETS; b++)
    for (let t = 0; t < TOKEN_BUCKETS; t++) {
      const { batch, tokens } = cellStep(b, t);
      if (tokens < batch || tokens > maxTokens) continue;
      const kinds: [StepKind, number[]][] = [["skewed", spread(tokens, batch, random)]];
      if (batch > 1) kinds.push(["uniform", even(tokens, batch)]);
      const steps = kinds.map(([kind, lengths]) => describeStep(kind, lengths, P));
      // A cell whose pages would not fit the pool's memory share is left to the built-in rule.
      if (Math.max(...steps.map((s) => s.pages)) * P * tokenBytes > poolBytes) continue;
      cells.push({ b, t, batch, tokens, steps });
    }
  const pools = groupIntoPools(cells, P);
  const launches = 2 + 2 * options.rounds;
  const bytesRead = cells.reduce((sum, c) => sum + c.steps.length * c.tokens * tokenBytes * launches, 0);
  return { tokenBytes, maxTokens, pools, bytesRead };
}

function describeStep(kind: StepKind, lengths: number[], pageSize: number): CalibrationStep {
  const pages = lengths.reduce((sum, n) => sum + Math.ceil(n / pageSize), 0);
  return { kind, lengths, pages, width: Math.ceil(Math.max(...lengths) / pageSize) };
}

/**
 * Pools whose block tables fit the native limit and, where one cell allows, the table budget: a table is as
 * wide as its longest row and as tall as its largest batch, and at page size 1 one table for a 1M-token row
 * and 1024 rows would need 2^30 entries. Cells sorted by width fall into runs of similar shape; a run grows
 * while its table stays within the budget (a cell that alone needs more gets a pool of its own).
 */
function groupIntoPools(cells: CalibrationCell[], pageSize: number): CalibrationPool[] {
  const widthOf = (c: CalibrationCell) => Math.max(...c.steps.map((s) => s.width));
  const pagesOf = (c: CalibrationCell) => Math.max(...c.steps.map((s) => s.pages));
  const sorted = [...cells].sort((x, y) => widthOf(y) - widthOf(x) || x.b - y.b || x.t - y.t);
  const pools: CalibrationPool[] = [];
  let current: CalibrationPool | undefined;
  for (const cell of sorted) {
    const width = widthOf(cell);
    if (cell.batch * width > MAX_TABLE_ENTRIES)
      throw new Error(`calibration: ${cell.batch} rows of ${width} pages exceed the block-table limit`);
    const rows = Math.max(current?.maxSequences ?? 0, cell.batch);
    if (current === undefined || rows * current.maxPagesPerSequence > TABLE_BUDGET) {
      current = { numPages: 0, maxSequences: 0, maxPagesPerSequence: width, cells: [] };
      pools.push(current);
    }
    current.maxSequences = Math.max(current.maxSequences, cell.batch);
    current.numPages = Math.max(current.numPages, pagesOf(cell));
    current.cells.push(cell);
  }
  for (const pool of pools)
    if (pool.numPages * pageSize > MAX_SLOTS)
      throw new Error(`calibration: ${pool.numPages} pages of ${pageSize} exceed the int32 slot range`);
  return pools;
}

/** `batch` lengths summing to `tokens`, spread log-normally (sigma 1) like a serving batch; each >= 1. */
export function spread(tokens: number, batch: number, random: () => number): number[] {
  const weights = Array.from({ length: batch }, () => Math.exp(gaussian(random)));
  const sum = weights.reduce((a, w) => a + w, 0);
  const extra = tokens - batch; // one token each first, so no length rounds to zero
  const lengths = weights.map((w) => 1 + Math.floor((w / sum) * extra));
  const heaviest = weights.indexOf(Math.max(...weights));
  lengths[heaviest]! += tokens - lengths.reduce((a, n) => a + n, 0);
  return lengths;
}

/** `batch` equal lengths summing to `tokens` (the first rows one longer where it does not divide). */
export function even(tokens: number, batch: number): number[] {
  const base = Math.floor(tokens / batch);
  return Array.from({ length: batch }, (_, i) => base + (i < tokens % batch ? 1 : 0));
}

function gaussian(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}
