// Calibration: times both kernels on synthetic steps for every cell of the policy table, on this GPU and
// with the engine settings given, and keeps a choice only where one kernel wins clearly and consistently
// (never picks from noise; see judge.ts). What it measures and in which pools: sizing.ts.
import type { DeviceBuffer } from "../buffers";
import { kvDtypeCode } from "../dtype";
import type { DecodeEngine, DecodeEngineOptions, EngineSettings } from "../engine";
import { InvalidArgumentError, UnsupportedError, Status } from "../errors";
import type { KVCache, KVCacheOptions, Sequence } from "../kvcache";
import { INT32_MAX, checkCount, checkFinite, checkOptions } from "../validate";
import { seeded } from "../random";
import type { Event } from "../streams";
import type { DecodePolicy, RuntimeContext } from "../types";
import { type DecisionRule, judgeCell, judgeStep } from "./judge";
import { type CalibrationPool, MAX_CALIBRATION_BATCH, type ModelShape, planCalibration } from "./sizing";
import { type CellMeasurement, emptyChoices, KERNEL_CODE, type PolicyTable, TOKEN_BUCKETS } from "./table";

export type { ModelShape } from "./sizing";

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
  /** Largest step measured, in tokens (default 2^21; capped at 4 GiB of K/V and a quarter of device memory). */
  maxTokens?: number;
  /** Paired timing rounds per step (default 15). */
  rounds?: number;
  /**
   * A kernel is chosen only if its median beats the other's by this fraction plus the cell's own run-to-run
   * spread (default 0.01: a cell left to the built-in rule then loses at most that sum, inside the policy's
   * allowed 2% for spreads under 1%)...
   */
  margin?: number;
  /** ...and it won by the margin in at least this fraction of the paired rounds (default 0.8). */
  agreement?: number;
  /** The engine settings to calibrate with; the table is stored for engines of the same resolved settings. */
  settings?: EngineSettings;
  onProgress?: (done: number, total: number, cell: CellMeasurement) => void;
}

export interface Calibration {
  table: PolicyTable;
  /** The settings measured, "auto" resolved (part of the table's key). */
  settings: Required<EngineSettings>;
}

export function calibrate(rt: CalibrationRuntime, shape: ModelShape, options: CalibrateOptions = {}): Calibration {
  const method = "calibrate";
  checkOptions(method, shape);
  for (const name of ["numQoHeads", "numKvHeads", "headDim", "pageSize"] as const)
    checkCount(method, name, shape[name], 1, INT32_MAX);
  kvDtypeCode(shape.dtype, shape.queryDtype);
  const o = checkOptions(method, options);
  const rounds = checkCount(method, "rounds", o.rounds ?? 15, 1, 10_000);
  const rule: DecisionRule = {
    margin: checkFinite(method, "margin", o.margin ?? 0.01, 0),
    agreement: checkFinite(method, "agreement", o.agreement ?? 0.8, 0, 1),
  };
  const maxTokens = checkCount(method, "maxTokens", o.maxTokens ?? 2 ** 21, 1);
  if (o.onProgress !== undefined && typeof o.onProgress !== "function")
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `${method}: onProgress is not a function`);
  if (rt.backend !== "cuda")
    throw new UnsupportedError(Status.UNSUPPORTED, "calibration times GPU kernels: it needs the CUDA backend");
  const plan = planCalibration(shape, { maxTokens, totalMemory: rt.info.totalMemory, rounds });
  // Settings are checked here, before any pool is made (a bad one throws from the engine's constructor).
  using engine = rt.createDecodeEngine({
    ...shape,
    policy: "adaptive",
    maxBatch: MAX_CALIBRATION_BATCH,
    settings: o.settings,
  });
  const ioBytes = MAX_CALIBRATION_BATCH * shape.numQoHeads * shape.headDim * 2;
  using q = rt.allocDevice(ioBytes);
  using out = rt.allocDevice(ioBytes);
  q.fill(0x3c); // 1.0-ish halves: the values do not change a memory-bound kernel's time
  using source = createSource(rt, plan.tokenBytes);
  using start = rt.createEvent();
  using stop = rt.createEvent();

  const time = (cache: KVCache, seqs: Sequence[], policy: DecodePolicy): number => {
    const step = engine.plan(cache, seqs, { policy }); // re-planned each round: a newer plan makes the old stale
    rt.flushL2(); // a serving loop's other layers leave L2 cold
    start.record();
    engine.run(step, 0, q, out);
    stop.record();
    stop.synchronize();
    return stop.elapsedSince(start) * 1000;
  };

  const table: PolicyTable = { choices: emptyChoices(), measurements: [] };
  const total = plan.pools.reduce((n, pool) => n + pool.cells.length, 0);
  for (const pool of plan.pools) {
    using cache = createPool(rt, shape, pool);
    fillPool(rt, cache, source);
    for (const cell of pool.cells) {
      const steps = cell.steps.map((step) => {
        const seqs = step.lengths.map((length) => {
          const seq = cache.createSequence();
          cache.append(seq, length);
          return seq;
        });
        time(cache, seqs, "baseline"); // warm-up: uploads the rows' block-table entries once
        time(cache, seqs, "persistent");
        const base: number[] = [],
          pers: number[] = [];
        // Each pair alternates which kernel goes first, so an order effect (clocks ramping within a
        // pair) cancels out of the paired ratios rather than favouring one kernel.
        for (let r = 0; r < rounds; r++)
          if (r % 2 === 0) {
            base.push(time(cache, seqs, "baseline"));
            pers.push(time(cache, seqs, "persistent"));
          } else {
            pers.push(time(cache, seqs, "persistent"));
            base.push(time(cache, seqs, "baseline"));
          }
        for (const seq of seqs) cache.release(seq);
        return judgeStep(step.kind, base, pers, rule);
      });
      const measured = judgeCell(cell.batch, cell.tokens, steps, rule);
      if (measured.choice !== "none") table.choices[cell.b * TOKEN_BUCKETS + cell.t] = KERNEL_CODE[measured.choice];
      table.measurements.push(measured);
      o.onProgress?.(table.measurements.length, total, measured);
    }
  }
  return { table, settings: engine.settings };
}

function createPool(rt: CalibrationRuntime, shape: ModelShape, pool: CalibrationPool): KVCache {
  return rt.createKVCache({
    ...shape,
    numLayers: 1,
    numPages: pool.numPages,
    maxSequences: pool.maxSequences,
    maxPagesPerSequence: pool.maxPagesPerSequence,
  });
}

/** Random K and V for one chunk of tokens, from which every pool's pages are written. */
interface KVSource extends Disposable {
  k: DeviceBuffer;
  v: DeviceBuffer;
  tokens: number;
}

// 8 MiB each of K and V: the default shape's 4096 tokens, and little host work to generate for any shape.
const SOURCE_BYTES = 2 ** 23;

function createSource(rt: CalibrationRuntime, tokenBytes: number): KVSource {
  const tokens = Math.max(1, Math.floor(SOURCE_BYTES / (tokenBytes / 2)));
  const k = rt.allocDevice((tokens * tokenBytes) / 2);
  const v = rt.allocDevice((tokens * tokenBytes) / 2);
  const random = seeded(7);
  const bits = (n: number) => Uint16Array.from({ length: n }, () => 0x3000 + ((random() * 0x0fff) | 0)); // small, finite halves
  k.write(bits(k.bytes / 2));
  v.write(bits(v.bytes / 2));
  return {
    k,
    v,
    tokens,
    [Symbol.dispose]() {
      k[Symbol.dispose]();
      v[Symbol.dispose]();
    },
  };
}

/** Writes K and V into every page once (timing must not run on zeros). */
function fillPool(rt: CalibrationRuntime, cache: KVCache, source: KVSource): void {
  const seqs: Sequence[] = [];
  const width = cache.config.maxPagesPerSequence;
  for (let left = cache.stats().pagesFree; left > 0; left -= Math.min(left, width)) {
    const seq = cache.createSequence();
    const slots = cache.append(seq, Math.min(left, width) * cache.config.pageSize);
    for (let i = 0; i < slots.length; i += source.tokens)
      cache.writeKV(0, slots.subarray(i, i + source.tokens), source.k, source.v);
    seqs.push(seq);
  }
  for (const seq of seqs) cache.release(seq);
  rt.synchronize();
}
