// Random sharing trees for the shared-prefix tests (CPU and GPU): a KV cache whose sequences hold pages
// in common through forks (forks of forks too) and prefix-cache hits, beside sequences that share
// nothing, and a decode step over them checked against pkv_reference_decode.
import { expect } from "bun:test";
import { decode } from "../../lib/dtype.ts";
import type { EngineSettings, Plan } from "../../lib/engine.ts";
import type { KVCache, Sequence } from "../../lib/kvcache.ts";
import { referenceDecode } from "../../lib/reference.ts";
import type { Runtime } from "../../lib/runtime.ts";
import { tolerance } from "../../lib/testing/decode-check.ts";
import { randomHalves, rng } from "../../lib/testing/pool.ts";

export interface TreeCase {
  group: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  dtype: "f16" | "bf16";
  seed: number;
  /** Prefix groups (each a root with forks, some forked again). */
  groups: number;
  /** Longest root prefix, in tokens. */
  maxPrefix: number;
  /** Rows of a prefix-cache group (0: none). */
  prefixHits: number;
  /** Rows that share nothing. */
  loners: number;
  numLayers?: number;
}

export interface Tree {
  cache: KVCache;
  sequences: Sequence[];
}

const int = (random: () => number, lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));

export function buildTree(rt: Runtime, c: TreeCase): Tree {
  const random = rng(c.seed);
  const P = c.pageSize;
  const layers = c.numLayers ?? 1;
  const cache = rt.createKVCache({
    numLayers: layers,
    numPages: Math.ceil((c.groups * 12 + c.prefixHits + c.loners + 4) * (c.maxPrefix / P + 4)) + 64,
    pageSize: P,
    numKvHeads: c.numKvHeads,
    headDim: c.headDim,
    dtype: c.dtype,
    maxSequences: c.groups * 12 + c.prefixHits + c.loners + 4,
  });
  const E = c.numKvHeads * c.headDim;
  const write = (slots: Int32Array) => {
    for (let layer = 0; layer < layers; layer++)
      cache.writeKV(
        layer,
        slots,
        randomHalves(c.dtype, slots.length * E, random),
        randomHalves(c.dtype, slots.length * E, random),
      );
  };
  const grow = (seq: Sequence, n: number) => {
    if (n > 0) write(cache.append(seq, n));
  };
  const sequences: Sequence[] = [];
  for (let g = 0; g < c.groups; g++) {
    const root = cache.createSequence();
    // Whole pages and a partial one now and then (the partial page is copied on the forks' appends).
    grow(root, int(random, 1, c.maxPrefix));
    const forks = int(random, 1, 4);
    for (let f = 0; f < forks; f++) {
      const child = cache.fork(root);
      grow(child, int(random, 0, 3 * P));
      sequences.push(child);
      if (random() < 0.5) {
        // A fork of a fork: the grandchildren share the child's pages past the root's.
        for (let k = int(random, 1, 3); k > 0; k--) {
          const grand = cache.fork(child);
          grow(grand, int(random, 1, 2 * P + 1));
          sequences.push(grand);
        }
      }
    }
    if (random() < 0.5) sequences.push(root);
    else grow(root, 0);
  }
  if (c.prefixHits > 0) {
    // The same prompt again and again: its full pages come from the prefix cache.
    const ids = Int32Array.from({ length: int(random, P + 1, Math.max(P + 1, c.maxPrefix)) }, () =>
      int(random, 0, 50000),
    );
    for (let i = 0; i < c.prefixHits; i++) {
      const seq = cache.createSequence({ tokens: ids });
      const slots = cache.append(seq, ids.subarray(seq.prefixHitTokens));
      if (slots.length > 0) write(slots);
      grow(seq, int(random, 1, 2 * P)); // registers the prompt's full pages for the next one
      sequences.push(seq);
    }
  }
  for (let i = 0; i < c.loners; i++) {
    const seq = cache.createSequence();
    grow(seq, random() < 0.3 ? 1 : int(random, 1, c.maxPrefix));
    sequences.push(seq);
  }
  // Rows in random order: members of one node need not be adjacent.
  for (let i = sequences.length - 1; i > 0; i--) {
    const j = int(random, 0, i);
    [sequences[i], sequences[j]] = [sequences[j]!, sequences[i]!];
  }
  return { cache, sequences };
}

export interface StepResult {
  plan: Plan;
  relError: number;
  lseError: number;
}

/** One decode step over the tree with `settings`, every layer checked against the reference. */
export function checkStep(rt: Runtime, c: TreeCase, tree: Tree, settings: EngineSettings): StepResult {
  const { cache, sequences } = tree;
  using engine = rt.createDecodeEngine({
    cache,
    numQoHeads: c.group * c.numKvHeads,
    maxBatch: sequences.length,
    settings,
  });
  const plan = engine.plan(cache, sequences);
  return { plan, ...runAndCompare(c, tree, (layer, q, out, lse) => engine.run(plan, layer, q, out, lse)) };
}

type Run = (layer: number, q: Uint16Array, out: Uint16Array, lse: Float32Array) => void;

/** Runs every layer with random q and compares out and lse with the reference over each sequence's pages. */
export function runAndCompare(c: TreeCase, tree: Tree, run: Run): { relError: number; lseError: number } {
  const { cache, sequences } = tree;
  const random = rng(c.seed + 1);
  const hq = c.group * c.numKvHeads;
  const batch = sequences.length;
  const lens = Int32Array.from(sequences, (s) => s.length);
  const total = lens.reduce((a, b) => a + b, 0);
  const E = c.numKvHeads * c.headDim;
  let diff = 0;
  let norm = 0;
  let lseError = 0;
  for (let layer = 0; layer < (c.numLayers ?? 1); layer++) {
    // The reference reads each sequence's tokens as pages of one token: [token][head][dim] is HND then.
    const kPages = new Uint16Array(total * E);
    const vPages = new Uint16Array(total * E);
    let at = 0;
    for (const seq of sequences) {
      const { k, v } = cache.readKV(layer, seq);
      kPages.set(k, at * E);
      vPages.set(v, at * E);
      at += seq.length;
    }
    const indptr = new Int32Array(batch + 1);
    for (let b = 0; b < batch; b++) indptr[b + 1] = indptr[b]! + lens[b]!;
    const q = randomHalves(c.dtype, batch * hq * c.headDim, random);
    const out = new Uint16Array(q.length).fill(0x7fff);
    const lse = new Float32Array(batch * hq).fill(Number.NaN);
    run(layer, q, out, lse);
    const ref = new Uint16Array(q.length);
    const refLse = new Float32Array(batch * hq);
    referenceDecode({
      shape: { numQoHeads: hq, numKvHeads: c.numKvHeads, headDim: c.headDim, pageSize: 1, dtype: c.dtype },
      pageIndptr: indptr,
      pageIndices: Int32Array.from({ length: total }, (_, i) => i),
      seqLens: lens,
      kPages,
      vPages,
      numPages: total,
      q,
      out: ref,
      lse: refLse,
    });
    const a = decode(c.dtype, out);
    const r = decode(c.dtype, ref);
    for (let i = 0; i < a.length; i++) {
      const d = a[i]! - r[i]!;
      diff += Number.isNaN(d) ? Number.POSITIVE_INFINITY : d * d;
      norm += r[i]! * r[i]!;
    }
    for (let i = 0; i < lse.length; i++) {
      const d = Math.abs(lse[i]! - refLse[i]!);
      lseError = Math.max(lseError, Number.isNaN(d) ? Number.POSITIVE_INFINITY : d);
    }
  }
  return { relError: Math.sqrt(diff / norm), lseError };
}

export const outputTolerance = (dtype: "f16" | "bf16") => tolerance(dtype);
export const LSE_TOLERANCE = 2e-3;

/** Asserts a step's output and lse errors (runAndCompare's result) are within the tolerances. */
export function expectClose(c: TreeCase, r: { relError: number; lseError: number }): void {
  expect(r.relError).toBeLessThan(outputTolerance(c.dtype));
  expect(r.lseError).toBeLessThan(LSE_TOLERANCE);
}
