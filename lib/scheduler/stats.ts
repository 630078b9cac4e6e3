// What one scheduler step did, and the running totals: the numbers a server logs and a benchmark plots.

export interface StepReport {
  step: number;
  /** Wall time of the whole step: admission, prefill writes, plan, every layer, sampling. */
  timeMs: number;
  /** Part of timeMs spent in engine.plan. */
  planMs: number;
  /** Requests decoded this step (one new token each). */
  batch: number;
  /** Context tokens attended over, summed over the batch (what one layer reads). */
  contextTokens: number;
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
}

export interface SchedulerTotals {
  steps: number;
  generatedTokens: number;
  prefillTokens: number;
  prefixHitTokens: number;
  admitted: number;
  swapIns: number;
  preemptedBySwap: number;
  preemptedByRecompute: number;
  finished: number;
  cancelled: number;
  failed: number;
  busyMs: number;
}

export function emptyTotals(): SchedulerTotals {
  return {
    steps: 0,
    generatedTokens: 0,
    prefillTokens: 0,
    prefixHitTokens: 0,
    admitted: 0,
    swapIns: 0,
    preemptedBySwap: 0,
    preemptedByRecompute: 0,
    finished: 0,
    cancelled: 0,
    failed: 0,
    busyMs: 0,
  };
}

export function addStep(totals: SchedulerTotals, r: StepReport): void {
  totals.steps++;
  totals.generatedTokens += r.batch;
  totals.prefillTokens += r.prefillTokens;
  totals.prefixHitTokens += r.prefixHitTokens;
  totals.admitted += r.admitted;
  totals.swapIns += r.swapIns;
  totals.preemptedBySwap += r.preemptedBySwap;
  totals.preemptedByRecompute += r.preemptedByRecompute;
  totals.finished += r.finished;
  totals.failed += r.failed;
  totals.busyMs += r.timeMs;
}

/** The q-quantile (0..1) of values, nearest rank; NaN when empty. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}
