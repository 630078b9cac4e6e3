// One multi-query correctness case: random pool and q, a plan with each row's query length, the run
// (host arrays or device buffers, outputs poisoned first), compared with pkv_reference_multiquery.
// Shared by the CPU tests, the GPU tests and the sanitizer script.
import { decode, type DType } from "../dtype";
import { DecodeEngine, type DecodePolicy, type EngineSettings } from "../engine";
import { referenceMultiquery } from "../reference-multiquery";
import type { Runtime } from "../runtime";
import { POISON } from "./decode-check";
import { randomHalves, rng, TestPool, type TestSequence } from "./pool";

export interface MultiqueryCase {
  group: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  dtype: DType;
  /** Each row's context length (its newest qLen tokens included) and query length (1..length). */
  rows: { length: number; qLen: number }[];
  seed?: number;
}

export interface MultiqueryResult {
  kernel: string;
  numTasks: number;
  maxSplits: number;
  queryTokens: number;
  relError: number; // ||out - ref|| / ||ref||
  lseError: number; // max |lse - ref|
  unwritten: number; // outputs still holding the poison pattern (or NaN)
}

/**
 * Whether an engine of default settings runs every row of the case on the decode kernels: rows of
 * qLen 1, and rows of qLen x group <= 16 where its decode body is the tensor-core one (head dims up
 * to 128, 16-bit pages). A plan of such rows names a decode kernel, not "multiquery".
 */
export function decodeKernelsTakeAll(c: MultiqueryCase): boolean {
  return c.rows.every((r) => r.qLen === 1 || (c.headDim <= 128 && r.qLen * c.group <= 16));
}

/** An output against the reference's: ||out - ref|| / ||ref||, and the entries still poisoned (or NaN). */
export function outputError(dtype: DType, out: Uint16Array, ref: Uint16Array): { relError: number; unwritten: number } {
  const got = decode(dtype, out),
    want = decode(dtype, ref);
  let diff = 0,
    norm = 0,
    unwritten = 0;
  for (let i = 0; i < out.length; i++) {
    if (out[i] === POISON || Number.isNaN(got[i]!)) unwritten++;
    else diff += (got[i]! - want[i]!) ** 2;
    norm += want[i]! ** 2;
  }
  return { relError: Math.sqrt(diff / Math.max(norm, 1e-30)), unwritten };
}

/** pkv_reference_multiquery over the pool's host copy of one layer. */
export function poolReferenceMultiquery(
  pool: TestPool,
  layer: number,
  sequences: readonly TestSequence[],
  qLens: readonly number[],
  numQoHeads: number,
  q: Uint16Array,
) {
  const s = pool.shape;
  const indptr = new Int32Array(sequences.length + 1),
    qIndptr = new Int32Array(sequences.length + 1);
  sequences.forEach((seq, i) => {
    indptr[i + 1] = indptr[i]! + seq.pages.length;
    qIndptr[i + 1] = qIndptr[i]! + qLens[i]!;
  });
  const indices = new Int32Array(indptr[sequences.length]!);
  sequences.forEach((seq, i) => indices.set(seq.pages, indptr[i]!));
  const tokens = qIndptr[sequences.length]!;
  const out = new Uint16Array(tokens * numQoHeads * s.headDim);
  const lse = new Float32Array(tokens * numQoHeads);
  referenceMultiquery({
    shape: { numQoHeads, numKvHeads: s.numKvHeads, headDim: s.headDim, pageSize: s.pageSize, dtype: s.dtype },
    qIndptr,
    pageIndptr: indptr,
    pageIndices: indices,
    seqLens: Int32Array.from(sequences.map((seq) => seq.length)),
    kPages: pool.k[layer]!,
    vPages: pool.v[layer]!,
    numPages: s.numPages,
    q,
    out,
    lse,
  });
  return { out, lse };
}

export function runMultiqueryCase(
  rt: Runtime,
  c: MultiqueryCase,
  options: { device?: boolean; policy?: DecodePolicy; settings?: EngineSettings } = {},
): MultiqueryResult {
  const random = rng(c.seed ?? 11);
  const lengths = c.rows.map((r) => r.length),
    qLens = c.rows.map((r) => r.qLen);
  const pagesNeeded = lengths.reduce((n, len) => n + Math.ceil(len / c.pageSize), 0);
  const pool = new TestPool(
    rt,
    {
      numLayers: 1,
      numPages: pagesNeeded + 3,
      pageSize: c.pageSize,
      numKvHeads: c.numKvHeads,
      headDim: c.headDim,
      dtype: c.dtype,
      maxSequences: c.rows.length,
      maxPagesPerSequence: Math.max(...lengths.map((len) => Math.ceil(len / c.pageSize))),
    },
    c.seed ?? 11,
  );
  const hq = c.group * c.numKvHeads;
  const engine = new DecodeEngine(rt, {
    numQoHeads: hq,
    numKvHeads: c.numKvHeads,
    headDim: c.headDim,
    pageSize: c.pageSize,
    dtype: c.dtype,
    maxBatch: c.rows.length,
    settings: options.settings,
  });
  try {
    const sequences = lengths.map((len) => pool.addSequence(len));
    const tokens = qLens.reduce((a, b) => a + b, 0);
    const n = tokens * hq * c.headDim;
    const q = randomHalves(c.dtype, n, random, 2);
    const ref = poolReferenceMultiquery(pool, 0, sequences, qLens, hq, q);
    const plan = engine.plan(pool, sequences, { qLens, policy: options.policy });
    const out = new Uint16Array(n).fill(POISON);
    const lse = new Float32Array(tokens * hq).fill(Number.NaN);
    if (options.device) {
      const qb = rt.allocDevice(n * 2),
        ob = rt.allocDevice(n * 2),
        lb = rt.allocDevice(lse.byteLength);
      qb.write(q);
      ob.write(out);
      lb.write(lse);
      engine.run(plan, 0, qb, ob, lb);
      ob.read(out);
      lb.read(lse);
      for (const b of [qb, ob, lb]) b.dispose();
    } else {
      engine.run(plan, 0, q, out, lse);
    }
    const { relError, unwritten } = outputError(c.dtype, out, ref.out);
    let lseError = 0;
    for (let i = 0; i < lse.length; i++) {
      const e = Math.abs(lse[i]! - ref.lse[i]!);
      lseError = Math.max(lseError, Number.isNaN(e) ? Infinity : e);
    }
    return {
      kernel: plan.kernel,
      numTasks: plan.numTasks,
      maxSplits: plan.maxSplits,
      queryTokens: plan.queryTokens,
      relError,
      lseError,
      unwritten,
    };
  } finally {
    engine.dispose();
    pool.dispose();
  }
}
