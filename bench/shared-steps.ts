// The steps of bench/workloads/shared.json built on a KVCache the way a serving stack shares pages: a
// prefix is appended once and forked (KVCache.fork), so the rows' block tables hold the same page ids
// for its full pages, and each fork copies a partial last page on its first append. K and V are random.
import type { KVCache, NativeBuffer, Runtime, Sequence } from "persistentkv";
import { randomHalves, rng } from "persistentkv/testing";

/** A row on private pages (a number: its tokens), or a prefix that each of `rows` forks. */
export type StepEntry = number | { prefix: number; rows: StepEntry[] };

export interface SharedWorkload {
  name: string;
  about: string;
  model: { num_qo_heads: number; num_kv_heads: number; head_dim: number; page_size: number; dtype: "f16" | "bf16" };
  steps: StepEntry[][];
}

/**
 * The step with every length multiplied by `factor` (rounded, at least 1 token) and each list of entries
 * cut to its first `maxEntries`: small steps of the same shape for --quick.
 */
export function scaleStep(step: readonly StepEntry[], factor: number, maxEntries = Infinity): StepEntry[] {
  const scale = (n: number) => Math.max(1, Math.round(n * factor));
  return step
    .slice(0, maxEntries)
    .map((e) =>
      typeof e === "number" ? scale(e) : { prefix: scale(e.prefix), rows: scaleStep(e.rows, factor, maxEntries) },
    );
}

/** Each row's context length, in batch order (depth first, as the step lists them). */
export function rowLengths(step: readonly StepEntry[], base = 0): number[] {
  return step.flatMap((e) => (typeof e === "number" ? [base + e] : rowLengths(e.rows, base + e.prefix)));
}

/** What a cache needs to hold a step: its pages (an upper bound), rows plus prefix sequences, and widest row. */
export function stepNeeds(step: readonly StepEntry[], pageSize: number) {
  let pages = 0,
    sequences = 0;
  const walk = (entries: readonly StepEntry[]) => {
    for (const e of entries) {
      sequences++;
      // +1: the copy of a shared partial last page that a fork makes on its first append.
      pages += Math.ceil((typeof e === "number" ? e : e.prefix) / pageSize) + 1;
      if (typeof e !== "number") walk(e.rows);
    }
  };
  walk(step);
  const widest = Math.max(...rowLengths(step));
  return { pages, sequences, maxPagesPerSequence: Math.ceil(widest / pageSize) };
}

/** Writes the same random K and V block into every layer at the slots appends return, chunk by chunk. */
export class RandomKV implements Disposable {
  readonly #k: NativeBuffer;
  readonly #v: NativeBuffer;
  readonly #chunk: number;

  constructor(rt: Runtime, cache: KVCache, chunkTokens = 16384) {
    const { numKvHeads, headDim, queryDtype } = cache.config;
    const elements = chunkTokens * numKvHeads * headDim;
    const random = rng(29);
    this.#k = rt.allocDevice(elements * 2);
    this.#v = rt.allocDevice(elements * 2);
    this.#k.write(randomHalves(queryDtype ?? "f16", elements, random));
    this.#v.write(randomHalves(queryDtype ?? "f16", elements, random));
    this.#chunk = chunkTokens;
  }

  write(cache: KVCache, slots: Int32Array): void {
    for (let layer = 0; layer < cache.config.numLayers; layer++)
      for (let from = 0; from < slots.length; from += this.#chunk)
        cache.writeKV(layer, slots.subarray(from, from + this.#chunk), this.#k, this.#v);
  }

  [Symbol.dispose](): void {
    this.#k.dispose();
    this.#v.dispose();
  }
}

/** A built step: the batch's rows in order, and every sequence made for it (rows and prefixes) to release. */
export interface BuiltStep {
  rows: Sequence[];
  all: Sequence[];
}

/** Builds one step on `cache` (empty or holding only other steps' released pages). */
export function buildStep(cache: KVCache, kv: RandomKV, step: readonly StepEntry[]): BuiltStep {
  const rows: Sequence[] = [],
    all: Sequence[] = [];
  const grow = (seq: Sequence, tokens: number) => {
    all.push(seq);
    kv.write(cache, cache.append(seq, tokens));
    return seq;
  };
  const place = (entries: readonly StepEntry[], parent: Sequence | null) => {
    for (const e of entries) {
      const start = () => (parent ? cache.fork(parent) : cache.createSequence());
      if (typeof e === "number") rows.push(grow(start(), e));
      // The prefix's K and V are written before its forks exist: its pages are private until then.
      else place(e.rows, grow(start(), e.prefix));
    }
  };
  place(step, null);
  return { rows, all };
}

/** Releases every sequence of a built step (children before the prefixes they fork). */
export function releaseStep(cache: KVCache, built: BuiltStep): void {
  for (const seq of [...built.all].reverse()) cache.release(seq);
}

/**
 * Bytes of K and V in the distinct pages the rows read (each page's tokens counted once, however many
 * rows hold it): what a step that reads every shared page once must read at least.
 */
export function distinctKvBytes(cache: KVCache, rows: readonly Sequence[], bytesPerToken: number): number {
  const P = cache.config.pageSize;
  const tokensOf = new Map<number, number>();
  for (const seq of rows) {
    const pages = cache.pagesOf(seq);
    pages.forEach((page, c) => {
      const tokens = Math.min(P, seq.length - c * P);
      tokensOf.set(page, Math.max(tokensOf.get(page) ?? 0, tokens));
    });
  }
  let tokens = 0;
  for (const t of tokensOf.values()) tokens += t;
  return tokens * bytesPerToken;
}
