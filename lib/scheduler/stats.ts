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
  /** Requests that ended: "finished" counts both maxTokens reached and a stop token; "stopped" the latter. */
  finished: number;
  stopped: number;
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
  "stopped",
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
  /** Time to first token (ms from submit) of each request whose first token this step produced. */
  ttftMs: number[];
  /** Inter-token latency (ms since its previous token) of each other request that got a token. */
  itlMs: number[];
}

export interface SchedulerTotals extends Counters {
  steps: number;
  generatedTokens: number;
  cancelled: number;
  busyMs: number;
  /** Steps that decoded a batch: their wall time. */
  stepTime: LatencyHistogram;
  ttft: LatencyHistogram;
  itl: LatencyHistogram;
}

/** Upper bounds (ms) of the latency buckets: sub-millisecond steps up to minute-long waits. */
export const LATENCY_BUCKETS_MS: readonly number[] = [
  0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000,
];

/** A fixed-bucket histogram (what Prometheus exports): counts per bucket, their sum and count. */
export class LatencyHistogram {
  readonly boundsMs: readonly number[];
  /** counts[i]: observations <= boundsMs[i] and > the bound before; the last entry is above every bound. */
  readonly counts: number[];
  sumMs = 0;
  count = 0;

  constructor(boundsMs: readonly number[] = LATENCY_BUCKETS_MS) {
    this.boundsMs = boundsMs;
    this.counts = new Array<number>(boundsMs.length + 1).fill(0);
  }

  observe(ms: number): void {
    let i = 0;
    while (i < this.boundsMs.length && ms > this.boundsMs[i]!) i++;
    this.counts[i]!++;
    this.sumMs += ms;
    this.count++;
  }

  /** Observations at or below each bound, then the total (Prometheus's cumulative `le` buckets). */
  cumulative(): number[] {
    const out: number[] = [];
    let running = 0;
    for (const c of this.counts) {
      running += c;
      out.push(running);
    }
    return out;
  }
}

function zeroCounters(): Counters {
  return Object.fromEntries(COUNTERS.map((key) => [key, 0])) as unknown as Counters;
}

export function emptyTotals(): SchedulerTotals {
  return {
    ...zeroCounters(),
    steps: 0,
    generatedTokens: 0,
    cancelled: 0,
    busyMs: 0,
    stepTime: new LatencyHistogram(),
    ttft: new LatencyHistogram(),
    itl: new LatencyHistogram(),
  };
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
    ttftMs: [],
    itlMs: [],
  };
}

export function addStep(totals: SchedulerTotals, r: StepReport): void {
  totals.steps++;
  totals.generatedTokens += r.batch;
  totals.busyMs += r.timeMs;
  for (const key of COUNTERS) totals[key] += r[key];
  if (r.batch > 0) totals.stepTime.observe(r.timeMs);
  for (const ms of r.ttftMs) totals.ttft.observe(ms);
  for (const ms of r.itlMs) totals.itl.observe(ms);
}

/** The q-quantile (0..1) of values, nearest rank; NaN when empty. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}
