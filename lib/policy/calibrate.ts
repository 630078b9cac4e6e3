// Calibration: times both kernels on a synthetic step for every cell of the policy table, on this GPU,
// and keeps a choice only where one kernel wins clearly and consistently (never picks from noise).
import type { DeviceBuffer } from "../buffers";
import { type DType, dtypeCode } from "../dtype";
import type { DecodeEngine, DecodeEngineOptions } from "../engine";
import { InvalidArgumentError, UnsupportedError, Status } from "../errors";
import type { KVCache, KVCacheOptions, Sequence } from "../kvcache";
import { INT32_MAX, checkCount, checkFinite, checkOptions } from "../validate";
import { seeded } from "../random";
import type { Event } from "../streams";
import type { DecodeKernel, DecodePolicy, RuntimeContext } from "../types";
import {
  BATCH_BUCKETS,
  type CellMeasurement,
  cellStep,
  emptyChoices,
  KERNEL_CODE,
  type PolicyTable,
  TOKEN_BUCKETS,
} from "./table";

export interface ModelShape {
  numQoHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  dtype: DType;
}

/** What calibration uses of a runtime (the Runtime class provides it; declared here so the two do not import each other). */
export interface CalibrationRuntime extends RuntimeContext {
  createKVCache(options: KVCacheOptions): KVCache;
  createDecodeEngine(options: DecodeEngineOptions): DecodeEngine;
  allocDevice(bytes: number): DeviceBuffer;
  createEvent(): Event;
  flushL2(): void;
  synchronize(): void;
}

export interface CalibrateOptions {
  /** Largest step measured, in tokens (default 2^21, capped at a quarter of device memory). */
  maxTokens?: number;
  /** Paired timing rounds per cell (default 15). */
  rounds?: number;
  /** A kernel is chosen only if its median beats the other's by this fraction (default 0.03)... */
  margin?: number;
  /** ...and it won at least this fraction of the paired rounds (default 0.8). */
  agreement?: number;
  onProgress?: (done: number, total: number, cell: CellMeasurement) => void;
}

export function calibrate(rt: CalibrationRuntime, shape: ModelShape, options: CalibrateOptions = {}): PolicyTable {
  const method = "calibrate";
  checkOptions(method, shape);
  for (const name of ["numQoHeads", "numKvHeads", "headDim", "pageSize"] as const)
    checkCount(method, name, shape[name], 1, INT32_MAX);
  dtypeCode(shape.dtype);
  const o = checkOptions(method, options);
  const rounds = checkCount(method, "rounds", o.rounds ?? 15, 1, 10_000);
  const margin = checkFinite(method, "margin", o.margin ?? 0.03, 0);
  const agreement = checkFinite(method, "agreement", o.agreement ?? 0.8, 0, 1);
  const requestedTokens = checkCount(method, "maxTokens", o.maxTokens ?? 2 ** 21, 1);
  if (o.onProgress !== undefined && typeof o.onProgress !== "function")
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `${method}: onProgress is not a function`);
  if (rt.backend !== "cuda")
    throw new UnsupportedError(Status.UNSUPPORTED, "calibration times GPU kernels: it needs the CUDA backend");
  const tokenBytes = 2 * shape.numKvHeads * shape.headDim * 2;
  const maxTokens = Math.min(requestedTokens, Math.floor(rt.info.totalMemory / 4 / tokenBytes));
  const maxBatch = 2 ** (BATCH_BUCKETS - 1);
  const width = Math.ceil(maxTokens / shape.pageSize) + 1;
  using cache = rt.createKVCache({
    ...shape,
    numLayers: 1,
    numPages: width + maxBatch,
    maxSequences: maxBatch,
    maxPagesPerSequence: width,
  });
  fillPool(rt, cache, shape, tokenBytes);
  using engine = rt.createDecodeEngine({ ...shape, policy: "adaptive", maxBatch });
  const ioBytes = maxBatch * shape.numQoHeads * shape.headDim * 2;
  using q = rt.allocDevice(ioBytes);
  using out = rt.allocDevice(ioBytes);
  q.fill(0x3c); // 1.0-ish halves: the values do not change a memory-bound kernel's time
  using start = rt.createEvent();
  using stop = rt.createEvent();

  const time = (seqs: Sequence[], policy: DecodePolicy): number => {
    const plan = engine.plan(cache, seqs, { policy }); // re-planned each round: a newer plan makes the old stale
    rt.flushL2(); // a serving loop's other layers leave L2 cold
    start.record();
    engine.run(plan, 0, q, out);
    stop.record();
    stop.synchronize();
    return stop.elapsedSince(start) * 1000;
  };

  const table: PolicyTable = { choices: emptyChoices(), measurements: [] };
  const cells: [number, number][] = [];
  for (let b = 0; b < BATCH_BUCKETS; b++)
    for (let t = 0; t < TOKEN_BUCKETS; t++) {
      const { batch, tokens } = cellStep(b, t);
      if (tokens >= batch && tokens <= maxTokens) cells.push([b, t]);
    }
  const random = seeded(20261122);
  cells.forEach(([b, t], i) => {
    const { batch, tokens } = cellStep(b, t);
    const seqs = spread(tokens, batch, random).map((length) => {
      const seq = cache.createSequence();
      cache.append(seq, length);
      return seq;
    });
    time(seqs, "baseline"); // warm-up: uploads the rows' block-table entries once
    time(seqs, "persistent");
    const base: number[] = [],
      pers: number[] = [];
    for (let r = 0; r < rounds; r++) {
      base.push(time(seqs, "baseline"));
      pers.push(time(seqs, "persistent"));
    }
    for (const seq of seqs) cache.release(seq);
    const cell = judge(batch, tokens, base, pers, margin, agreement);
    if (cell.choice !== "none") table.choices[b * TOKEN_BUCKETS + t] = KERNEL_CODE[cell.choice];
    table.measurements.push(cell);
    o.onProgress?.(i + 1, cells.length, cell);
  });
  return table;
}

/** The clear winner of paired timings, or "none". */
export function judge(
  batch: number,
  tokens: number,
  base: number[],
  pers: number[],
  margin: number,
  agreement: number,
): CellMeasurement {
  const baselineUs = median(base),
    persistentUs = median(pers);
  const winner: DecodeKernel = persistentUs < baselineUs ? "persistent" : "baseline";
  const [mine, theirs] = winner === "persistent" ? [pers, base] : [base, pers];
  const wins = mine.filter((x, i) => x < theirs[i]!).length / mine.length;
  const gain = Math.max(baselineUs, persistentUs) / Math.min(baselineUs, persistentUs) - 1;
  const clear = gain >= margin && wins >= agreement;
  return { batch, tokens, baselineUs, persistentUs, agreement: wins, choice: clear ? winner : "none" };
}

/** Writes random K and V into every page once, from one device chunk (timing must not run on zeros). */
function fillPool(rt: CalibrationRuntime, cache: KVCache, shape: ModelShape, tokenBytes: number): void {
  const chunk = 4096;
  using k = rt.allocDevice((chunk * tokenBytes) / 2);
  using v = rt.allocDevice((chunk * tokenBytes) / 2);
  const random = seeded(7);
  const bits = (n: number) => Uint16Array.from({ length: n }, () => 0x3000 + ((random() * 0x0fff) | 0)); // small, finite halves
  k.write(bits(k.bytes / 2));
  v.write(bits(v.bytes / 2));
  const seqs: Sequence[] = [];
  const width = Math.floor(cache.config.maxPagesPerSequence);
  for (let left = cache.stats().pagesFree; left > 0; left -= Math.min(left, width)) {
    const seq = cache.createSequence();
    const slots = cache.append(seq, Math.min(left, width) * shape.pageSize);
    for (let i = 0; i < slots.length; i += chunk) cache.writeKV(0, slots.subarray(i, i + chunk), k, v);
    seqs.push(seq);
  }
  for (const seq of seqs) cache.release(seq);
  rt.synchronize();
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

function gaussian(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
}
