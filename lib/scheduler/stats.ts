// What one scheduler step did, and the running totals: the numbers a server logs and a benchmark plots.
import type { PkvError } from "../errors";

/** What both a step and the running totals count. */
export interface Counters {
  /** Prompt (or recomputed) tokens whose K and V were written at admission. */
  prefillTokens: number;
  /** Prompt tokens found in the prefix cache at admission (their K and V not recomputed). */
  prefixHitTokens: number;
  admitted: number;
  swapIns: number;
  preemptedBySwap: number;
  preemptedByRecompute: number;
  finished: number;
  failed: number;
}
const COUNTERS: (keyof Counters)[] = [
  "prefillTokens",
  "prefixHitTokens",
  "admitted",
  "swapIns",
  "preemptedBySwap",
  "preemptedByRecompute",
  "finished",
  "failed",
];

export interface StepReport extends Counters {
  step: number;
  /** Wall time of the whole step: admission, prefill writes, plan, every layer, sampling. */
  timeMs: number;
  /** Part of timeMs spent in engine.plan. */
  planMs: number;
  /** Requests decoded this step (one new token each). */
  batch: number;
  /** Context tokens attended over, summed over the batch (what one layer reads). */
  contextTokens: number;
  /** The decode kernel the engine's plan chose ("" on a step with nothing to decode). */
  kernel: string;
  waiting: number;
  running: number;
  swapped: number;
  pagesUsed: number;
  pagesTotal: number;
  /** pagesUsed / pagesTotal after the step. */
  kvUtilisation: number;
  pagesShared: number;
  pagesCached: number;
  pagesSwapped: number;
  /** Reserved-but-empty slots over reserved slots: the partial last pages. */
  wasteFraction: number;
  /** The typed error that failed the step's decode (each of its requests got it too); null if none did. */
  error: PkvError | null;
}

export interface SchedulerTotals extends Counters {
  steps: number;
  generatedTokens: number;
  cancelled: number;
  busyMs: number;
}

function zeroCounters(): Counters {
  return Object.fromEntries(COUNTERS.map((key) => [key, 0])) as unknown as Counters;
}

export function emptyTotals(): SchedulerTotals {
  return { ...zeroCounters(), steps: 0, generatedTokens: 0, cancelled: 0, busyMs: 0 };
}

export function emptyReport(step: number): StepReport {
  return {
    ...zeroCounters(),
    step,
    timeMs: 0,
    planMs: 0,
    batch: 0,
    contextTokens: 0,
    kernel: "",
    waiting: 0,
    running: 0,
    swapped: 0,
    pagesUsed: 0,
    pagesTotal: 0,
    kvUtilisation: 0,
    pagesShared: 0,
    pagesCached: 0,
    pagesSwapped: 0,
    wasteFraction: 0,
    error: null,
  };
}

export function addStep(totals: SchedulerTotals, r: StepReport): void {
  totals.steps++;
  totals.generatedTokens += r.batch;
  totals.busyMs += r.timeMs;
  for (const key of COUNTERS) totals[key] += r[key];
}

/** The q-quantile (0..1) of values, nearest rank; NaN when empty. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}
