// One decode correctness case: random pool and q, plan + run on the engine (host arrays or device
// buffers, outputs poisoned first), compared with pkv_reference_decode. Shared by the CPU tests, the
// GPU tests and the GPU sweep.
import { type DType, decode, type KVDType, valueDtype } from "../dtype";
import { DecodeEngine, type DecodePolicy, type EngineSettings } from "../engine";
import type { Runtime } from "../runtime";
import { randomHalves, rng, TestPool } from "./pool";

export interface DecodeCase {
  group: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  dtype: KVDType;
  /** q and out of an FP8 case: "f16" (default) or "bf16". */
  queryDtype?: DType;
  lengths: number[];
  numLayers?: number;
  seed?: number;
  /** Engine settings, e.g. to force the dynamic tail or claiming onto a small step. */
  settings?: EngineSettings;
}

export interface CaseResult {
  policy: DecodePolicy;
  kernel: string;
  loader: string;
  numTasks: number;
  maxSplits: number;
  relError: number; // ||out - ref|| / ||ref|| over every layer
  lseError: number; // max |lse - ref|
  unwritten: number; // outputs still holding the poison pattern (or NaN)
}

export const POISON = 0x7fff; // a NaN in both f16 and bf16

/**
 * Tolerance of ||out - ref|| / ||ref||: a few output roundings of the 16-bit type (FP8 pages: of the query
 * type, since kernel and reference read the same codes and scales).
 */
export const tolerance = (dtype: KVDType, queryDtype?: DType) =>
  valueDtype(dtype, queryDtype) === "f16" ? 2e-3 : 1.6e-2;

export function runCase(
  rt: Runtime,
  c: DecodeCase,
  policies: DecodePolicy[] = ["baseline", "persistent"],
  device = false,
): CaseResult[] {
  const layers = c.numLayers ?? 1;
  const values = valueDtype(c.dtype, c.queryDtype);
  const random = rng(c.seed ?? 7);
  const pagesNeeded = c.lengths.reduce((n, len) => n + Math.ceil(len / c.pageSize), 0);
  const pool = new TestPool(
    rt,
    {
      numLayers: layers,
      numPages: pagesNeeded + 3, // a few pages no sequence uses
      pageSize: c.pageSize,
      numKvHeads: c.numKvHeads,
      headDim: c.headDim,
      dtype: c.dtype,
      queryDtype: values,
      maxSequences: c.lengths.length,
      maxPagesPerSequence: Math.max(...c.lengths.map((len) => Math.ceil(len / c.pageSize))),
    },
    c.seed ?? 7,
  );
  const hq = c.group * c.numKvHeads;
  const engine = new DecodeEngine(rt, {
    numQoHeads: hq,
    numKvHeads: c.numKvHeads,
    headDim: c.headDim,
    pageSize: c.pageSize,
    dtype: c.dtype,
    queryDtype: values,
    maxBatch: c.lengths.length,
    settings: c.settings,
  });
  try {
    const sequences = c.lengths.map((len) => pool.addSequence(len));
    const n = c.lengths.length * hq * c.headDim;
    // q spans [-2, 2] so the softmax is far from uniform and a wrong key shows in the output.
    const qs = Array.from({ length: layers }, () => randomHalves(values, n, random, 2));
    const refs = qs.map((q, layer) => pool.reference(layer, sequences, hq, q));
    return policies.map((policy) => {
      const plan = engine.plan(pool, sequences, { policy });
      let diff = 0,
        norm = 0,
        lseError = 0,
        unwritten = 0;
      for (let layer = 0; layer < layers; layer++) {
        const out = new Uint16Array(n).fill(POISON);
        const lse = new Float32Array(c.lengths.length * hq).fill(Number.NaN);
        if (device) {
          const qb = rt.allocDevice(n * 2),
            ob = rt.allocDevice(n * 2),
            lb = rt.allocDevice(lse.byteLength);
          qb.write(qs[layer]!);
          ob.write(out);
          lb.write(lse);
          engine.run(plan, layer, qb, ob, lb);
          ob.read(out);
          lb.read(lse);
          for (const b of [qb, ob, lb]) b.dispose();
        } else {
          engine.run(plan, layer, qs[layer]!, out, lse);
        }
        const got = decode(values, out),
          want = decode(values, refs[layer]!.out);
        for (let i = 0; i < n; i++) {
          if (out[i] === POISON || Number.isNaN(got[i]!)) unwritten++;
          else diff += (got[i]! - want[i]!) ** 2;
          norm += want[i]! ** 2;
        }
        for (let i = 0; i < lse.length; i++) {
          const e = Math.abs(lse[i]! - refs[layer]!.lse[i]!);
          lseError = Math.max(lseError, Number.isNaN(e) ? Infinity : e);
        }
      }
      return {
        policy,
        kernel: plan.kernel,
        loader: plan.loader,
        numTasks: plan.numTasks,
        maxSplits: plan.maxSplits,
        relError: Math.sqrt(diff / Math.max(norm, 1e-30)),
        lseError,
        unwritten,
      };
    });
  } finally {
    engine.dispose();
    pool.dispose();
  }
}
