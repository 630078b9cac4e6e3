// The adaptive policy's table: a measured kernel choice per (batch, total tokens) cell. Batches bucket by
// powers of two (1, 2-3, 4-7, ..., 1024+), steps by powers of two of total context tokens (below 2^10,
// 2^10-2^11, ..., 2^22+). A cell holds the kernel that won clearly on this GPU, or NO_PREFERENCE,
// where the native built-in rule decides. The grid constants mirror PKV_POLICY_* in the header.
import type { DecodeKernel } from "../types";

export const BATCH_BUCKETS = 11;
export const TOKEN_BUCKETS = 14;
export const MIN_LOG2_TOKENS = 9;
export const NO_PREFERENCE = -1;
// Null prototype: a lookup of "toString" finds nothing rather than Object.prototype's function.
export const KERNEL_CODE: Readonly<Record<DecodeKernel, number>> = Object.freeze(
  Object.assign(Object.create(null), { baseline: 0, persistent: 1 }),
);

/** Whether a stored cell holds a choice the native policy takes: NO_PREFERENCE or a kernel code. */
export function isChoice(value: unknown): boolean {
  return value === NO_PREFERENCE || value === 0 || value === 1;
}

export function batchBucket(batch: number): number {
  return Math.min(BATCH_BUCKETS - 1, Math.floor(Math.log2(Math.max(1, batch))));
}

export function tokenBucket(totalTokens: number): number {
  const log2 = Math.floor(Math.log2(Math.max(1, totalTokens)));
  return Math.min(TOKEN_BUCKETS - 1, Math.max(0, log2 - MIN_LOG2_TOKENS));
}

/** The representative step of a cell: its smallest batch, and tokens at the bucket's geometric middle. */
export function cellStep(b: number, t: number): { batch: number; tokens: number } {
  const tokens = Math.round(2 ** (t + MIN_LOG2_TOKENS + 0.5));
  return { batch: 2 ** b, tokens: t === 0 ? 2 ** MIN_LOG2_TOKENS : tokens };
}

/** Both kernels timed on one synthetic step of a cell, and the kernel that step alone would choose. */
export interface StepMeasurement {
  /** How the step's rows are spread: log-normal ("skewed") or equal ("uniform"). */
  kind: "skewed" | "uniform";
  rounds: number;
  /** Median kernel times over the paired rounds. */
  baselineUs: number;
  persistentUs: number;
  /** Median over rounds of baseline / persistent time, minus 1: above 0, persistent is faster. */
  gain: number;
  /** The cell's run-to-run spread: half the central 80% range of the per-round ratios, as a fraction. */
  spread: number;
  /** Fraction of paired rounds in which the faster kernel won by at least the margin. */
  agreement: number;
  choice: DecodeKernel | "none";
}

export interface CellMeasurement {
  batch: number;
  tokens: number;
  /** One measurement per step kind (a batch of 1 has only one). */
  steps: StepMeasurement[];
  /** The kernel that held on every step of the cell, or "none" (the built-in rule decides). */
  choice: DecodeKernel | "none";
}

export interface PolicyTable {
  /** Cells row-major by batch bucket: choices[b * TOKEN_BUCKETS + t]. */
  choices: Int8Array;
  measurements: CellMeasurement[];
}

export function emptyChoices(): Int8Array {
  return new Int8Array(BATCH_BUCKETS * TOKEN_BUCKETS).fill(NO_PREFERENCE);
}
