// Decode attention in plain TypeScript and float64, written from the definition (not from the C code), plus
// a generator of random paged batches. Tests hold the native reference, and through it every kernel, to this.
import { encode, decode, type DType } from "../../lib/dtype.ts";

export interface PagedBatch {
  numQoHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  dtype: DType;
  numPages: number;
  pageIndptr: Int32Array;
  pageIndices: Int32Array;
  seqLens: Int32Array;
  /** 16-bit storage, as the native side sees it. */
  kPages: Uint16Array;
  vPages: Uint16Array;
  q: Uint16Array;
}

/**
 * softmax(scale * q.K^T) V for each sequence and query head, in float64 over the stored (rounded) values.
 * Query head h reads KV head floor(h / group). Returns out [batch][Hq][d] and lse [batch][Hq] (natural log
 * of the softmax denominator; -Infinity and a zero output for an empty context).
 */
export function decodeAttention(batch: PagedBatch, scale: number): { out: Float64Array; lse: Float64Array } {
  const { numQoHeads: hq, numKvHeads: hkv, headDim: d, pageSize, pageIndptr, pageIndices, seqLens } = batch;
  const group = hq / hkv;
  const k = decode(batch.dtype, batch.kPages);
  const v = decode(batch.dtype, batch.vPages);
  const q = decode(batch.dtype, batch.q);
  const out = new Float64Array(seqLens.length * hq * d);
  const lse = new Float64Array(seqLens.length * hq).fill(-Infinity);

  for (let b = 0; b < seqLens.length; b++) {
    const len = seqLens[b]!;
    // Gather the sequence's context into [token][kv_head][d] first; attention is then over a plain array.
    const keys = new Float64Array(len * hkv * d);
    const values = new Float64Array(len * hkv * d);
    for (let t = 0; t < len; t++) {
      const page = pageIndices[pageIndptr[b]! + Math.floor(t / pageSize)]!;
      const slot = t % pageSize;
      for (let h = 0; h < hkv; h++) {
        const from = ((page * hkv + h) * pageSize + slot) * d; // HND: [page][kv_head][slot][d]
        keys.set(k.subarray(from, from + d), (t * hkv + h) * d);
        values.set(v.subarray(from, from + d), (t * hkv + h) * d);
      }
    }
    for (let h = 0; h < hq; h++) {
      const kvHead = Math.floor(h / group);
      const query = q.subarray((b * hq + h) * d, (b * hq + h + 1) * d);
      const logits = new Float64Array(len);
      for (let t = 0; t < len; t++) {
        let dot = 0;
        for (let i = 0; i < d; i++) dot += query[i]! * keys[(t * hkv + kvHead) * d + i]!;
        logits[t] = dot * scale;
      }
      if (len === 0) continue;
      const max = logits.reduce((m, x) => Math.max(m, x), -Infinity);
      let sum = 0;
      const o = out.subarray((b * hq + h) * d, (b * hq + h + 1) * d);
      for (let t = 0; t < len; t++) {
        const p = Math.exp(logits[t]! - max);
        sum += p;
        for (let i = 0; i < d; i++) o[i]! += p * values[(t * hkv + kvHead) * d + i]!;
      }
      for (let i = 0; i < d; i++) o[i]! /= sum;
      lse[b * hq + h] = max + Math.log(sum);
    }
  }
  return { out, lse };
}

/** A small deterministic generator (xorshift32), so a failing case can be rerun from its seed. */
export function rng(seed: number): () => number {
  let x = seed >>> 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

export function shuffle<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

export interface BatchSpec {
  numQoHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  dtype: DType;
  seqLens: number[];
  seed: number;
  /** Pages in the pool that no sequence uses (they must not leak into any result). */
  sparePages?: number;
  /** Scale of q's entries (larger: peakier softmax). */
  qScale?: number;
}

/** Random K, V and q in [-1, 1) (q times qScale) on shuffled page ids: no sequence's pages are in order. */
export function randomPagedBatch(spec: BatchSpec): PagedBatch {
  const random = rng(spec.seed);
  const { numQoHeads, numKvHeads, headDim, pageSize, dtype } = spec;
  const pagesOf = spec.seqLens.map((len) => Math.ceil(len / pageSize));
  const used = pagesOf.reduce((a, b) => a + b, 0);
  const numPages = used + (spec.sparePages ?? 2);
  const ids = shuffle([...Array(numPages).keys()], random);
  const pageIndptr = new Int32Array(spec.seqLens.length + 1);
  pagesOf.forEach((n, b) => (pageIndptr[b + 1] = pageIndptr[b]! + n));
  const values = (n: number, scale: number) =>
    encode(
      dtype,
      Float32Array.from({ length: n }, () => (random() * 2 - 1) * scale),
    );
  const pageElems = numKvHeads * pageSize * headDim;
  return {
    numQoHeads,
    numKvHeads,
    headDim,
    pageSize,
    dtype,
    numPages,
    pageIndptr,
    pageIndices: Int32Array.from(ids.slice(0, used)),
    seqLens: Int32Array.from(spec.seqLens),
    kPages: values(numPages * pageElems, 1),
    vPages: values(numPages * pageElems, 1),
    q: values(spec.seqLens.length * numQoHeads * headDim, spec.qScale ?? 1),
  };
}
