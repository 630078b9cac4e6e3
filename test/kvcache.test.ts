// The KV cache's public operations and every error path, on the CPU backend. Each error test checks that
// the cache is exactly as before: stats, bookkeeping, page lists and K/V all equal.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { type Pointer, toArrayBuffer } from "bun:ffi";
import { native } from "../lib/ffi/loader.ts";
import {
  BadStateError,
  DecodeEngine,
  InvalidArgumentError,
  KVCache,
  type KVCacheOptions,
  OutOfPagesError,
  OutOfRangeError,
  type Runtime,
  type Sequence,
  StalePlanError,
  SwapFullError,
  UnsupportedError,
  cudaDeviceCount,
  openRuntime,
} from "../lib/index.ts";
import { REFUSED_WHILE_SWAPPED, fingerprint, sequenceOps, tokenData } from "./support/kvcache.ts";

const H = 2; // kv heads
const D = 64; // head dim
const E = H * D; // values per token per layer
const base: KVCacheOptions = { numLayers: 2, numPages: 8, pageSize: 4, numKvHeads: H, headDim: D, dtype: "f16" };

let rt: Runtime;
let stamp = 1;
beforeEach(() => {
  rt = openRuntime({ backend: "cpu" });
});
afterEach(() => rt.dispose());

function make(options: Partial<KVCacheOptions> = {}): KVCache {
  return new KVCache(rt, { ...base, ...options });
}

/** Appends n tokens (ids if given) and writes distinct K/V into every layer; returns the stamps written. */
function grow(cache: KVCache, seq: Sequence, n: number | number[]): number[] {
  const slots = cache.append(seq, n);
  const stamps = Array.from(slots, () => stamp++);
  for (let layer = 0; layer < cache.config.numLayers; layer++) {
    const { k, v } = tokenData(stamps, layer, E);
    cache.writeKV(layer, slots, k, v);
  }
  return stamps;
}

/** Checks that a sequence's K/V in every layer are those of `stamps`. */
function expectKV(cache: KVCache, seq: Sequence, stamps: number[]): void {
  for (let layer = 0; layer < cache.config.numLayers; layer++)
    expect(cache.readKV(layer, seq)).toEqual(tokenData(stamps, layer, E));
}

/** Runs `run`, which must throw `Class`, and checks nothing observable changed. */
function expectUnchanged(
  cache: KVCache,
  seqs: Sequence[],
  Class: new (...a: never[]) => Error,
  run: () => unknown,
): void {
  const before = fingerprint(cache, seqs);
  expect(run).toThrow(Class);
  expect(fingerprint(cache, seqs)).toEqual(before);
}

describe("sequences, append and K/V", () => {
  test("append reserves slots page by page and allocates only when the last page is full", () => {
    const cache = make();
    const seq = cache.createSequence();
    expect(seq.length).toBe(0);
    expect(seq.state).toBe("live");
    expect(Array.from(cache.append(seq, 3))).toEqual([0, 1, 2]);
    expect(cache.stats().pagesUsed).toBe(1);
    expect(Array.from(cache.append(seq, 1))).toEqual([3]);
    expect(cache.stats().pagesUsed).toBe(1);
    expect(Array.from(cache.append(seq, 6))).toEqual([4, 5, 6, 7, 8, 9]);
    expect(seq.length).toBe(10);
    expect(Array.from(cache.pagesOf(seq))).toEqual([0, 1, 2]);
    expect(cache.append(seq, 0).length).toBe(0);
    const s = cache.stats();
    expect(s).toMatchObject({ pagesTotal: 8, pagesUsed: 3, pagesFree: 5, pagesShared: 0, wastedSlots: 2 });
    expect(s.wasteFraction).toBeCloseTo(2 / 12);
  });

  test("append writes into `out` when given, and accepts token ids as an array or Int32Array", () => {
    const cache = make();
    const seq = cache.createSequence();
    const out = new Int32Array(8).fill(-1);
    expect(cache.append(seq, 2, out)).toBe(out);
    expect(Array.from(out.subarray(0, 3))).toEqual([0, 1, -1]);
    expect(Array.from(cache.append(seq, [5, 6]))).toEqual([2, 3]);
    expect(Array.from(cache.append(seq, Int32Array.of(7)))).toEqual([4]);
    expect(seq.length).toBe(5);
  });

  test("writeKV and readKV round-trip every layer exactly, host arrays or device buffers", () => {
    const cache = make();
    const seq = cache.createSequence();
    const stamps = grow(cache, seq, 6);
    expectKV(cache, seq, stamps);
    const slots = cache.append(seq, 3);
    const more = [stamp++, stamp++, stamp++];
    for (let layer = 0; layer < 2; layer++) {
      const { k, v } = tokenData(more, layer, E);
      using kb = rt.allocDevice(k.byteLength);
      using vb = rt.allocDevice(v.byteLength);
      kb.write(k);
      vb.write(v);
      cache.writeKV(layer, slots, kb, vb);
    }
    expectKV(cache, seq, [...stamps, ...more]);
  });

  test("a Float16Array is accepted for an f16 cache", () => {
    const cache = make();
    const seq = cache.createSequence();
    const slots = cache.append(seq, 1);
    const k = Float16Array.from({ length: E }, (_, i) => i / 8);
    cache.writeKV(0, slots, k, k);
    expect(cache.readKV(0, seq).k).toEqual(new Uint16Array(k.buffer));
  });

  test("describeBatch gives each live sequence's row and length", () => {
    const cache = make();
    const a = cache.createSequence();
    const b = cache.createSequence();
    cache.append(a, 5);
    cache.append(b, 1);
    const rows = new Int32Array(2);
    const lengths = new Int32Array(2);
    cache.describeBatch([b, a], rows, lengths);
    expect(Array.from(rows)).toEqual([b.row, a.row]);
    expect(Array.from(lengths)).toEqual([1, 5]);
    expect(a.row).not.toBe(b.row);
  });

  test("release returns pages to the free list; the row is reused", () => {
    const cache = make();
    const a = cache.createSequence();
    cache.append(a, 9);
    const row = a.row;
    cache.release(a);
    expect(a.state).toBe("released");
    expect(cache.stats()).toMatchObject({ pagesUsed: 0, pagesFree: 8, wastedSlots: 0, wasteFraction: 0 });
    const b = cache.createSequence();
    expect(b.row).toBe(row);
    expect(cache.snapshot().refcounts.every((r) => r === 0)).toBe(true);
  });

  test("dispose (or the runtime's) makes every use a BadStateError", () => {
    const cache = make();
    const seq = cache.createSequence();
    cache.dispose();
    expect(() => cache.poolHandle).toThrow(BadStateError);
    expect(() => cache.append(seq, 1)).toThrow(BadStateError);
    expect(() => cache.createSequence()).toThrow(BadStateError);
    expect(() => cache.stats()).toThrow(BadStateError);
    cache.dispose(); // twice is fine
    const other = make();
    rt.dispose();
    expect(() => other.poolHandle).toThrow(BadStateError);
    rt = openRuntime({ backend: "cpu" });
  });

  test("`using` disposes the cache", () => {
    let escaped: KVCache;
    {
      using cache = make();
      escaped = cache;
      expect(cache.poolHandle).toBeGreaterThan(0);
    }
    expect(escaped.disposed).toBe(true);
  });
});

describe("block table contract", () => {
  function tableViews(cache: KVCache) {
    const t = new BigUint64Array(1);
    const d = new BigUint64Array(1);
    expect(native().pkv_kvpool_table_addresses(cache.poolHandle, t, d)).toBe(0);
    const { maxSequences, maxPagesPerSequence } = cache.config;
    return {
      table: new Int32Array(toArrayBuffer(Number(t[0]) as Pointer, 0, maxSequences * maxPagesPerSequence * 4)),
      dirty: new Int32Array(toArrayBuffer(Number(d[0]) as Pointer, 0, maxSequences * 4)),
      width: maxPagesPerSequence,
    };
  }
  const CLEAN = 0x7fffffff;

  test("appends lower dirty_from to the first new column only when a page is added", () => {
    const cache = make({ swapPages: 4 });
    const { table, dirty, width } = tableViews(cache);
    const seq = cache.createSequence();
    const r = seq.row;
    cache.append(seq, 5);
    expect(dirty[r]).toBe(0);
    expect(Array.from(table.subarray(r * width, r * width + 2))).toEqual([0, 1]);
    dirty[r] = CLEAN; // the plan uploaded the row
    cache.append(seq, 2); // stays within page 1
    expect(dirty[r]).toBe(CLEAN);
    cache.append(seq, 2); // adds page 2
    expect(dirty[r]).toBe(2);
    dirty[r] = 1; // the cache only lowers dirty_from, never raises or resets it
    cache.append(seq, 4);
    expect(dirty[r]).toBe(1);
  });

  test("fork, copy-on-write, swap-in and row reuse mark the right columns", () => {
    const cache = make({ swapPages: 4 });
    const { table, dirty, width } = tableViews(cache);
    const parent = cache.createSequence();
    grow(cache, parent, 6);
    dirty.fill(CLEAN);
    const child = cache.fork(parent);
    expect(dirty[child.row]).toBe(0);
    expect(Array.from(table.subarray(child.row * width, child.row * width + 2))).toEqual(
      Array.from(cache.pagesOf(parent)),
    );
    dirty.fill(CLEAN);
    cache.append(child, 1); // shared partial page 1 is copied
    expect(dirty[child.row]).toBe(1);
    expect(dirty[parent.row]).toBe(CLEAN);
    cache.swapOut(parent);
    dirty.fill(CLEAN);
    cache.swapIn(parent);
    expect(dirty[parent.row]).toBe(0);
    const row = child.row;
    cache.release(child);
    dirty.fill(CLEAN);
    const next = cache.createSequence();
    expect(next.row).toBe(row);
    cache.append(next, 1);
    expect(dirty[row]).toBe(0);
  });
});

describe("fork and copy-on-write", () => {
  test("a fork shares every page; the first append into a shared partial page copies it", () => {
    const cache = make();
    const parent = cache.createSequence();
    const stamps = grow(cache, parent, 6);
    const child = cache.fork(parent);
    expect(Array.from(cache.pagesOf(child))).toEqual(Array.from(cache.pagesOf(parent)));
    expect(cache.stats()).toMatchObject({ pagesUsed: 2, pagesShared: 2, wastedSlots: 2 });
    expectKV(cache, child, stamps);
    const childMore = grow(cache, child, 1);
    expect(cache.pagesOf(child)[0]).toBe(cache.pagesOf(parent)[0]!);
    expect(cache.pagesOf(child)[1]).not.toBe(cache.pagesOf(parent)[1]!);
    expect(cache.stats()).toMatchObject({ pagesUsed: 3, pagesShared: 1, wastedSlots: 3 });
    const parentMore = grow(cache, parent, 1); // the parent now holds its page alone: no copy
    expect(cache.stats().pagesUsed).toBe(3);
    expectKV(cache, child, [...stamps, ...childMore]);
    expectKV(cache, parent, [...stamps, ...parentMore]);
  });

  test("a fork whose last page is full copies nothing on append", () => {
    const cache = make();
    const parent = cache.createSequence();
    const stamps = grow(cache, parent, 8);
    const child = cache.fork(parent);
    grow(cache, child, 1);
    grow(cache, parent, 1);
    expect(cache.stats()).toMatchObject({ pagesUsed: 4, pagesShared: 2 });
    expect(cache.readKV(1, child).k.subarray(0, 8 * E)).toEqual(tokenData(stamps, 1, E).k);
  });

  test("releasing the parent keeps the child's pages", () => {
    const cache = make();
    const parent = cache.createSequence();
    const stamps = grow(cache, parent, 7);
    const child = cache.fork(parent);
    cache.release(parent);
    expect(cache.stats()).toMatchObject({ pagesUsed: 2, pagesShared: 0 });
    expectKV(cache, child, stamps);
  });
});

describe("prefix cache", () => {
  const prompt = [11, 12, 13, 14, 21, 22, 23, 24, 31, 32];

  test("full pages are found by their token ids after the writer's next append; hits share the pages", () => {
    const cache = make();
    const a = cache.createSequence();
    const stamps = grow(cache, a, prompt);
    // Registration waits for the next append (or fork, swapOut, release): K/V are written by then.
    const early = cache.createSequence({ tokens: prompt });
    expect(early.prefixHitTokens).toBe(0);
    cache.release(early);
    grow(cache, a, [40]);
    const b = cache.createSequence({ tokens: prompt });
    expect(b.prefixHitTokens).toBe(8); // two full pages; the partial third is private to a
    expect(b.length).toBe(8);
    expect(Array.from(cache.pagesOf(b))).toEqual(Array.from(cache.pagesOf(a).subarray(0, 2)));
    expectKV(cache, b, stamps.slice(0, 8));
    expect(cache.stats()).toMatchObject({ prefixHitTokens: 8, pagesShared: 2 });
    // The rest of the prompt is appended as usual.
    const rest = grow(cache, b, prompt.slice(8));
    expectKV(cache, b, [...stamps.slice(0, 8), ...rest]);
  });

  test("a hit needs the whole chain: the same second page after a different first page is a miss", () => {
    const cache = make();
    const a = cache.createSequence();
    grow(cache, a, prompt.slice(0, 8));
    cache.release(a); // registers and parks both pages
    expect(cache.stats()).toMatchObject({ pagesCached: 2, pagesUsed: 0 });
    expect(cache.createSequence({ tokens: [99, 12, 13, 14, 21, 22, 23, 24] }).prefixHitTokens).toBe(0);
    expect(cache.createSequence({ tokens: [11, 12, 13, 14, 21, 22, 23, 99] }).prefixHitTokens).toBe(4);
    expect(cache.createSequence({ tokens: [11, 12, 13] }).prefixHitTokens).toBe(0); // no full page
    expect(cache.createSequence({ tokens: prompt }).prefixHitTokens).toBe(8);
  });

  test("released pages stay cached and are revived by a hit with their K/V intact", () => {
    const cache = make();
    const a = cache.createSequence();
    const stamps = grow(cache, a, prompt);
    cache.release(a);
    expect(cache.stats()).toMatchObject({ pagesUsed: 0, pagesCached: 2, pagesFree: 6 });
    const b = cache.createSequence({ tokens: prompt });
    expect(b.prefixHitTokens).toBe(8);
    expect(cache.stats()).toMatchObject({ pagesUsed: 2, pagesCached: 0, wastedSlots: 0 });
    expectKV(cache, b, stamps.slice(0, 8));
  });

  test("discard frees pages without registering them, so no later request reuses their K/V", () => {
    const cache = make();
    const a = cache.createSequence();
    grow(cache, a, prompt);
    cache.discard(a);
    expect(cache.stats()).toMatchObject({ pagesUsed: 0, pagesCached: 0, pagesFree: 8 });
    expect(cache.createSequence({ tokens: prompt }).prefixHitTokens).toBe(0);
    expect(() => cache.discard(a)).toThrow(BadStateError);
  });

  test("cached pages are evicted least recently released first, a prompt's tail before its head", () => {
    const cache = make({ numPages: 6 });
    const a = cache.createSequence();
    grow(cache, a, [1, 1, 1, 1, 2, 2, 2, 2]);
    const b = cache.createSequence();
    grow(cache, b, [3, 3, 3, 3, 4, 4, 4, 4]);
    cache.release(a);
    cache.release(b);
    const [a0, a1] = [0, 1];
    expect(Array.from(cache.snapshot().cachedPages)).toEqual([a1, a0, 3, 2]);
    const c = cache.createSequence();
    cache.append(c, 16); // 2 free pages, then evicts a's tail page and then a's head page
    expect(Array.from(cache.pagesOf(c)).sort()).toEqual([a0, a1, 4, 5].sort());
    expect(cache.stats()).toMatchObject({ pagesCached: 2, pagesFree: 0 });
    expect(cache.createSequence({ tokens: [1, 1, 1, 1] }).prefixHitTokens).toBe(0);
    expect(cache.createSequence({ tokens: [3, 3, 3, 3, 4, 4, 4, 4] }).prefixHitTokens).toBe(8);
  });

  test("two sequences that fill the same pages end up sharing them (the later copy is freed)", () => {
    const cache = make();
    const a = cache.createSequence();
    const b = cache.createSequence();
    const stamps = grow(cache, a, prompt.slice(0, 8));
    grow(cache, b, prompt.slice(0, 8));
    expect(cache.stats().pagesUsed).toBe(4);
    grow(cache, a, [1]); // registers a's pages
    grow(cache, b, [1]); // b finds them and drops its own copies
    expect(Array.from(cache.pagesOf(b).subarray(0, 2))).toEqual(Array.from(cache.pagesOf(a).subarray(0, 2)));
    expect(cache.stats()).toMatchObject({ pagesUsed: 4, pagesShared: 2 });
    expect(cache.readKV(0, b).k.subarray(0, 8 * E)).toEqual(tokenData(stamps, 0, E).k);
  });

  test("appending a count (no ids) ends registration for that sequence", () => {
    const cache = make();
    const a = cache.createSequence();
    grow(cache, a, 4);
    grow(cache, a, [1, 2, 3, 4]);
    cache.release(a);
    expect(cache.stats().pagesCached).toBe(0);
  });

  test("hits stop at maxPagesPerSequence", () => {
    const cache = make({ maxPagesPerSequence: 2 });
    const a = cache.createSequence();
    grow(cache, a, prompt.slice(0, 8));
    cache.release(a);
    const b = cache.createSequence({ tokens: [...prompt.slice(0, 8), 5, 5, 5, 5] });
    expect(b.prefixHitTokens).toBe(8);
  });
});

describe("swapping", () => {
  test("swapOut and swapIn move private pages byte for byte and remap the row", () => {
    const cache = make({ swapPages: 4 });
    const seq = cache.createSequence();
    const stamps = grow(cache, seq, 10);
    const other = cache.createSequence();
    const otherStamps = grow(cache, other, 3);
    cache.swapOut(seq);
    expect(seq.state).toBe("swapped");
    expect(seq.row).toBe(-1);
    expect(Array.from(cache.pagesOf(seq))).toEqual([-1, -1, -1]);
    expect(cache.stats()).toMatchObject({ pagesUsed: 1, pagesSwapped: 3, swapSlotsUsed: 3, swapSlotsTotal: 4 });
    grow(cache, other, 8); // reuses the freed pages
    cache.swapIn(seq);
    expect(seq.state).toBe("live");
    expect(cache.stats()).toMatchObject({ pagesUsed: 6, pagesSwapped: 0, swapSlotsUsed: 0, wastedSlots: 3 });
    expectKV(cache, seq, stamps);
    expect(cache.readKV(0, other).k.subarray(0, 3 * E)).toEqual(tokenData(otherStamps, 0, E).k);
    grow(cache, seq, 2);
    expect(seq.length).toBe(12);
  });

  test("shared pages stay resident while a swapped-out sequence holds them", () => {
    const cache = make({ swapPages: 4 });
    const parent = cache.createSequence();
    const stamps = grow(cache, parent, 6);
    const child = cache.fork(parent);
    const childMore = grow(cache, child, 3); // child copies page 1 and adds page 2
    cache.swapOut(child);
    expect(Array.from(cache.pagesOf(child))).toEqual([cache.pagesOf(parent)[0]!, -1, -1]);
    expect(cache.stats()).toMatchObject({ pagesSwapped: 2, pagesShared: 1 });
    // The shared page is not writable while the swapped-out child holds it, even after the parent is gone.
    cache.release(parent);
    const page0 = cache.pagesOf(child)[0]!;
    expect(() => cache.writeKV(0, Int32Array.of(page0 * 4), new Uint16Array(E), new Uint16Array(E))).toThrow(
      BadStateError,
    );
    cache.swapIn(child);
    expectKV(cache, child, [...stamps, ...childMore]);
  });

  test("a swapped-out sequence can be released: its slots and pages are freed", () => {
    const cache = make({ swapPages: 4 });
    const seq = cache.createSequence();
    grow(cache, seq, 5);
    cache.swapOut(seq);
    cache.release(seq);
    expect(cache.stats()).toMatchObject({ pagesUsed: 0, pagesFree: 8, swapSlotsUsed: 0 });
  });

  test("an empty sequence swaps without swap space", () => {
    const cache = make();
    const seq = cache.createSequence();
    cache.swapOut(seq);
    cache.swapIn(seq);
    expect(seq.state).toBe("live");
  });
});

describe("errors leave the cache unchanged", () => {
  /** A cache with two live sequences (one forked), a swapped one, cached pages, and little room. */
  function busy(options: Partial<KVCacheOptions> = {}) {
    const cache = make({ numPages: 6, maxSequences: 4, maxPagesPerSequence: 4, swapPages: 3, ...options });
    const gone = cache.createSequence();
    grow(cache, gone, [7, 7, 7, 7]);
    cache.release(gone); // one cached page
    const a = cache.createSequence();
    grow(cache, a, 6);
    const b = cache.fork(a);
    const out = cache.createSequence();
    grow(cache, out, 2);
    cache.swapOut(out);
    return { cache, a, b, out, gone, seqs: [a, b, out] };
  }

  // busy(): a and b share pages 1 and 2 (2 is partial), page 0 is cached, pages 3, 4 and 5 are free.
  test("out of pages: append, and the copy a shared partial page needs", () => {
    const { cache, a, b, seqs } = busy();
    const c = cache.createSequence();
    grow(cache, c, 8); // pages 3 and 4: one free page and one cached remain
    const all = [...seqs, c];
    expectUnchanged(cache, all, OutOfPagesError, () => cache.append(b, 7)); // a copy and 2 new pages
    grow(cache, b, 1); // b copies page 2 into the last free page
    expectUnchanged(cache, all, OutOfPagesError, () => cache.append(a, 7)); // 2 new pages, 1 cached
    grow(cache, a, 6); // evicts the cached page
    expect(cache.stats()).toMatchObject({ pagesFree: 0, pagesCached: 0 });
    const d = cache.fork(b); // shares b's partial last page
    expectUnchanged(cache, [...all, d], OutOfPagesError, () => cache.append(d, 1));
  });

  test("out of pages: swapIn", () => {
    const { cache, a, out, seqs } = busy();
    grow(cache, a, 10); // a copies page 2 and adds 2 pages: the free list is empty
    const c = cache.createSequence();
    grow(cache, c, 4); // evicts the cached page
    expect(cache.stats().pagesFree + cache.stats().pagesCached).toBe(0);
    expectUnchanged(cache, [...seqs, c], OutOfPagesError, () => cache.swapIn(out));
  });

  test("swap space full, or none at all", () => {
    const { cache, seqs } = busy();
    const c = cache.createSequence();
    grow(cache, c, 12); // 3 private pages; 2 of 3 swap slots are free
    expectUnchanged(cache, [...seqs, c], SwapFullError, () => cache.swapOut(c));
    const none = make();
    const s = none.createSequence();
    grow(none, s, 3);
    expectUnchanged(none, [s], SwapFullError, () => none.swapOut(s));
  });

  test("released and swapped-out sequences are refused (BadStateError)", () => {
    const { cache, a, out, gone, seqs } = busy();
    const ops = sequenceOps(cache);
    for (const op of Object.values(ops)) expectUnchanged(cache, seqs, BadStateError, () => op(gone));
    for (const name of REFUSED_WHILE_SWAPPED) expectUnchanged(cache, seqs, BadStateError, () => ops[name]!(out));
    expectUnchanged(cache, seqs, BadStateError, () =>
      cache.describeBatch([a, out], new Int32Array(2), new Int32Array(2)),
    );
    expectUnchanged(cache, seqs, BadStateError, () => cache.swapIn(a)); // live, not swapped out
  });

  test("writes to pages that are shared, cached, free or held by a swapped-out sequence are refused", () => {
    const { cache, a, seqs } = busy();
    const k = new Uint16Array(E);
    const shared = cache.pagesOf(a)[0]! * 4;
    const cachedPage = cache.snapshot().cachedPages[0]! * 4;
    const freePage = cache.snapshot().freePages.at(-1)! * 4;
    for (const slot of [shared, cachedPage, freePage])
      expectUnchanged(cache, seqs, BadStateError, () => cache.writeKV(0, Int32Array.of(slot), k, k));
  });

  test("out-of-range layers and slots (OutOfRangeError), non-integer layers (InvalidArgumentError)", () => {
    const { cache, a, seqs } = busy();
    const slots = cache.append(a, 1);
    const { k, v } = tokenData([1], 0, E);
    for (const layer of [-1, 2]) {
      expectUnchanged(cache, seqs, OutOfRangeError, () => cache.writeKV(layer, slots, k, v));
      expectUnchanged(cache, seqs, OutOfRangeError, () => cache.readKV(layer, a));
    }
    expectUnchanged(cache, seqs, InvalidArgumentError, () => cache.writeKV(0.5, slots, k, v));
    for (const slot of [-1, 6 * 4])
      expectUnchanged(cache, seqs, OutOfRangeError, () => cache.writeKV(0, Int32Array.of(slot), k, v));
  });

  test("wrong K/V shape or dtype, repeated slots and bad slot lists (InvalidArgumentError)", () => {
    const { cache, a, seqs } = busy();
    const slots = cache.append(a, 2);
    const good = new Uint16Array(2 * E);
    using small = rt.allocDevice(2 * E * 2 - 2);
    using device = rt.allocDevice(2 * E * 2);
    for (const [k, v] of [
      [new Uint16Array(2 * E - 1), good],
      [good, new Uint16Array(2 * E + 1)],
      [new Float32Array(2 * E), good],
      [good, new Int16Array(2 * E)],
      [good, device],
      [small, device],
      [null, good],
    ] as const)
      expectUnchanged(cache, seqs, InvalidArgumentError, () =>
        cache.writeKV(0, slots, k as Uint16Array, v as Uint16Array),
      );
    expectUnchanged(cache, seqs, InvalidArgumentError, () =>
      cache.writeKV(0, Int32Array.of(slots[0]!, slots[0]!), good, good),
    );
    expectUnchanged(cache, seqs, InvalidArgumentError, () =>
      cache.writeKV(0, [slots[0]!] as unknown as Int32Array, good, good),
    );
    const bf16 = make({ dtype: "bf16" });
    const s = bf16.createSequence();
    const one = bf16.append(s, 1);
    expectUnchanged(bf16, [s], InvalidArgumentError, () =>
      bf16.writeKV(0, one, new Float16Array(E), new Float16Array(E)),
    );
  });

  test("bad counts and token ids (InvalidArgumentError)", () => {
    const { cache, a, seqs } = busy();
    for (const bad of [-1, 1.5, NaN, [1, 2.5], [2 ** 31], ["1"], new Float32Array(2)])
      expectUnchanged(cache, seqs, InvalidArgumentError, () => cache.append(a, bad as number));
    expectUnchanged(cache, seqs, InvalidArgumentError, () => cache.append(a, 3, new Int32Array(2)));
    expectUnchanged(cache, seqs, InvalidArgumentError, () => cache.createSequence({ tokens: [1, -0.5] }));
    expectUnchanged(cache, seqs, InvalidArgumentError, () =>
      cache.describeBatch(seqs.slice(0, 2), new Int32Array(1), new Int32Array(2)),
    );
  });

  test("a sequence of another cache, or not a sequence (InvalidArgumentError)", () => {
    const { cache, seqs } = busy();
    const other = make();
    const foreign = other.createSequence();
    for (const op of Object.values(sequenceOps(cache)))
      expectUnchanged(cache, seqs, InvalidArgumentError, () => op(foreign));
    expectUnchanged(cache, seqs, InvalidArgumentError, () => cache.append({} as Sequence, 1));
  });

  test("too many sequences: create, fork and swapIn need a free row (OutOfRangeError)", () => {
    const { cache, a, out, seqs } = busy();
    const c = cache.createSequence();
    const d = cache.createSequence();
    const all = [...seqs, c, d]; // 4 rows in use
    expectUnchanged(cache, all, OutOfRangeError, () => cache.createSequence());
    expectUnchanged(cache, all, OutOfRangeError, () => cache.createSequence({ tokens: [7, 7, 7, 7] })); // would hit
    expectUnchanged(cache, all, OutOfRangeError, () => cache.fork(a));
    cache.release(c);
    cache.release(d);
    cache.fork(a);
    cache.fork(a);
    expectUnchanged(cache, seqs, OutOfRangeError, () => cache.swapIn(out));
  });

  test("a sequence longer than maxPagesPerSequence (OutOfRangeError)", () => {
    const { cache, a, seqs } = busy();
    expectUnchanged(cache, seqs, OutOfRangeError, () => cache.append(a, 11)); // 17 tokens: 5 pages > 4
    grow(cache, a, 2);
  });

  test("bad options (InvalidArgumentError, or UnsupportedError for shapes the pool does not support)", () => {
    for (const bad of [
      { numPages: 0 },
      { pageSize: 1.5 },
      { numLayers: -1 },
      { dtype: "f32" },
      { swapPages: -1 },
      { maxSequences: 0 },
    ])
      expect(() => make(bad as Partial<KVCacheOptions>)).toThrow(InvalidArgumentError);
    expect(() => make({ headDim: 96 })).toThrow(UnsupportedError);
    expect(() => make({ pageSize: 3 })).toThrow(UnsupportedError);
  });
});

// On every backend present: the CUDA path runs from the block-table entries the plan uploaded.
const BACKENDS = cudaDeviceCount() > 0 ? (["cpu", "cuda"] as const) : (["cpu"] as const);
for (const backend of BACKENDS) {
  describe(`a plan goes stale when its batch changes (${backend})`, () => {
    const Hq = 4;
    let brt: Runtime;
    beforeEach(() => {
      brt = backend === "cpu" ? rt : openRuntime({ backend });
    });
    afterEach(() => {
      if (backend !== "cpu") brt.dispose();
    });
    const cacheOn = () => new KVCache(brt, { ...base, numPages: 16, swapPages: 8, maxPagesPerSequence: 8 });
    function setup() {
      const cache = cacheOn();
      const engine = new DecodeEngine(brt, {
        numQoHeads: Hq,
        numKvHeads: H,
        headDim: D,
        pageSize: 4,
        dtype: "f16",
        maxBatch: 4,
      });
      const a = cache.createSequence();
      const b = cache.createSequence();
      grow(cache, a, 6); // a partial last page: appends of 1 or 2 stay in it
      grow(cache, b, 9);
      const q = new Uint16Array(2 * Hq * D).map((_, i) => 0x3000 + (i % 512));
      const run = (plan: ReturnType<DecodeEngine["plan"]>) => {
        const out = new Uint16Array(q.length);
        engine.run(plan, 1, q, out);
        return out;
      };
      return { cache, engine, a, b, q, run };
    }

    // Each change to a planned sequence's pages, length, row or state: the next run must refuse the plan.
    const changes: [string, (c: ReturnType<typeof setup>) => void, RegExp][] = [
      ["an append within the last page", ({ cache, a }) => void cache.append(a, 1), /sequence \d+ was appended to/],
      ["an append that adds a page", ({ cache, b }) => void cache.append(b, 4), /appended to/],
      ["release", ({ cache, a }) => cache.release(a), /was released/],
      ["discard", ({ cache, b }) => cache.discard(b), /was discarded/],
      ["swapOut", ({ cache, a }) => cache.swapOut(a), /was swapped out/],
      [
        "copy-on-write of a shared last page",
        ({ cache, a }) => {
          cache.fork(a);
          cache.append(a, 1);
        },
        /appended to/,
      ],
      ["dispose of the cache", ({ cache }) => cache.dispose(), /its KV cache was disposed/],
      [
        "dispose of the cache, and a new one made in its place",
        ({ cache }) => {
          cache.dispose();
          cacheOn().createSequence();
        },
        /its KV cache was disposed/,
      ],
    ];
    for (const [what, change, message] of changes)
      test(`after ${what}`, () => {
        const c = setup();
        const plan = c.engine.plan(c.cache, [c.a, c.b]);
        c.run(plan);
        change(c);
        expect(() => c.run(plan)).toThrow(StalePlanError);
        expect(() => c.run(plan)).toThrow(message);
        c.engine.dispose();
      });

    test("after a swap out and back in (new pages, new row)", () => {
      const c = setup();
      c.cache.swapOut(c.a);
      c.cache.swapIn(c.a);
      const plan = c.engine.plan(c.cache, [c.a, c.b]);
      c.run(plan);
      c.cache.swapOut(c.b);
      c.cache.swapIn(c.b);
      expect(() => c.run(plan)).toThrow(/was swapped out|was swapped in/);
    });

    test("not after K/V writes, appends of 0 or changes to other sequences; the result equals a fresh plan's", () => {
      const { cache, engine, a, b, run } = setup();
      const slots = cache.append(a, 1); // before the plan: its K/V is this step's to write
      const plan = engine.plan(cache, [a, b]);
      const first = run(plan);
      // The stamps' K bits give scores so far apart that the softmax is one-hot: the new token's K is made
      // the largest (fp16 49152 in every dimension against q's positive entries), so its V must show.
      const { v } = tokenData([stamp++], 1, E);
      const k = new Uint16Array(E).fill(0x7a00);
      cache.writeKV(1, slots, k, v); // a step writes each layer's new K/V between runs
      cache.append(a, 0);
      const other = cache.createSequence({ tokens: [1, 2, 3, 4, 5] });
      grow(cache, other, 3);
      const child = cache.fork(b);
      grow(cache, child, 2); // copies b's shared partial page for the child: b keeps its own
      cache.swapOut(child);
      cache.release(other);
      const again = run(plan); // still valid: nothing the plan holds changed
      expect(again).not.toEqual(first); // the rewritten token's K/V is read
      expect(run(engine.plan(cache, [a, b]))).toEqual(again);
    });

    test("a refused plan leaves the previous plan runnable", () => {
      const { cache, engine, a, b, run } = setup();
      const plan = engine.plan(cache, [a, b]);
      const gone = cache.createSequence();
      cache.release(gone);
      expect(() => engine.plan(cache, [a, gone])).toThrow(BadStateError);
      expect(() => engine.plan(cache, [a, b], { policy: "toString" as "adaptive" })).toThrow(InvalidArgumentError);
      expect(run(plan).length).toBe(2 * Hq * D);
    });
  });
}
