// Helpers shared by the KV cache tests: deterministic K/V data, a seeded random source, and a fingerprint
// of everything a cache stores (to check that a failed operation changed nothing).
import { seeded } from "../../lib/random";
import type { KVCache, Sequence } from "../../lib/index.ts";

/** The seed for random tests: PKV_SEED if set, else `fallback`; printed so a failure can be replayed. */
export function testSeed(name: string, fallback: number): number {
  const seed = process.env.PKV_SEED === undefined ? fallback : Number(process.env.PKV_SEED);
  if (!Number.isInteger(seed)) throw new Error(`PKV_SEED=${process.env.PKV_SEED} is not an integer`);
  console.log(`${name}: seed ${seed} (replay with PKV_SEED=${seed})`);
  return seed;
}

/** Random choices for the model test, from a seeded mulberry32 stream. */
export class Rng {
  readonly next: () => number;
  constructor(seed: number) {
    this.next = seeded(seed);
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
}

/**
 * Writes the K (which 0) or V (which 1) values of one token of one layer, derived from a stamp, at
 * out[at .. at + elems). Values never have an all-ones exponent (no NaN or Inf in f16 or bf16), so
 * no conversion anywhere could alter them.
 */
export function fillToken(
  out: Uint16Array,
  at: number,
  elems: number,
  stamp: number,
  layer: number,
  which: number,
): void {
  let x = (Math.imul(stamp, 0x9e3779b1) ^ Math.imul(layer + 1, 0x85ebca77) ^ Math.imul(which + 1, 0xc2b2ae3d)) | 0;
  for (let e = 0; e < elems; e++) {
    x = (Math.imul(x ^ (x >>> 15), 0x2c1b3c6d) + e) | 0;
    out[at + e] = (x >>> 16) & 0x7bff;
  }
}

/** K and V of tokens with the given stamps, in one layer: [n][elems] each. */
export function tokenData(stamps: ArrayLike<number>, layer: number, elems: number): { k: Uint16Array; v: Uint16Array } {
  const k = new Uint16Array(stamps.length * elems);
  const v = new Uint16Array(stamps.length * elems);
  for (let i = 0; i < stamps.length; i++) {
    fillToken(k, i * elems, elems, stamps[i]!, layer, 0);
    fillToken(v, i * elems, elems, stamps[i]!, layer, 1);
  }
  return { k, v };
}

/** Everything observable about a cache and its sequences: stats, bookkeeping, page lists, and K/V. */
export function fingerprint(cache: KVCache, sequences: readonly Sequence[]) {
  return {
    stats: cache.stats(),
    snapshot: cache.snapshot(),
    sequences: sequences.map((seq) => ({
      state: seq.state,
      length: seq.length,
      row: seq.row,
      pages: seq.state === "released" ? null : Array.from(cache.pagesOf(seq)),
      kv:
        seq.state === "live"
          ? Array.from({ length: cache.config.numLayers }, (_, layer) => cache.readKV(layer, seq))
          : null,
    })),
  };
}

/** Every operation that takes a sequence: a released sequence, or another cache's, must be refused by all. */
export function sequenceOps(cache: KVCache): Record<string, (seq: Sequence) => unknown> {
  return {
    append: (q) => cache.append(q, 1),
    readKV: (q) => cache.readKV(0, q),
    fork: (q) => cache.fork(q),
    release: (q) => cache.release(q),
    swapOut: (q) => cache.swapOut(q),
    swapIn: (q) => cache.swapIn(q),
    pagesOf: (q) => cache.pagesOf(q),
    describeBatch: (q) => cache.describeBatch([q], new Int32Array(1), new Int32Array(1)),
  };
}

/** The operations that a swapped-out sequence must be refused (BadStateError). */
export const REFUSED_WHILE_SWAPPED = ["append", "readKV", "fork", "swapOut", "describeBatch"] as const;
