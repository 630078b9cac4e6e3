// The paged KV cache: sequences of tokens stored in fixed-size pages of a native pool, with prefix sharing
// (fork and the prefix cache), copy-on-write, and swapping to pinned host memory.
//
// Every operation checks all it needs (state, row, width, free pages, swap slots) before it changes
// anything, so a typed error leaves the cache exactly as it was. Native calls that could still fail (a
// CUDA error) come before the bookkeeping they depend on, and what they took is given back.
import type { Pointer } from "bun:ffi";
import type { NativeBuffer } from "./buffers";
import { BlockTable } from "./cache/block-table";
import { IdStack } from "./cache/id-stack";
import { type KVCacheConfig, type KVCacheOptions, encodeConfig, resolveConfig } from "./cache/config";
import { type KVData, checkKVData, checkTokens } from "./cache/kv-arguments";
import { type DType, valueDtype } from "./dtype";
import { type KVPoolLayout, type TokenPositions, readLayout, splitSlots } from "./interop/layout";
import { PageAllocator } from "./cache/page-allocator";
import { ChangeClock, PlanGuard } from "./cache/plan-guard";
import { PrefixCache } from "./cache/prefix-cache";
import { Sequence, type SequenceRecord, record } from "./cache/sequence";
import { check, outPointer } from "./ffi/call";
import { native } from "./ffi/loader";
import { BadStateError, InvalidArgumentError, OutOfPagesError, OutOfRangeError, Status, SwapFullError } from "./errors";
import { NativeObject } from "./lifetime";
import type { RuntimeContext } from "./types";
import { checkCount, checkIndex, checkOptions } from "./validate";

export type { KVCacheOptions } from "./cache/config";

export interface KVCacheStats {
  pagesTotal: number;
  /** Pages held by at least one sequence (live or swapped out). */
  pagesUsed: number;
  /** Pages on the free list. */
  pagesFree: number;
  /** Pages held by more than one sequence. */
  pagesShared: number;
  /** Unheld pages kept for prefix hits (evicted least recently released first when pages run out). */
  pagesCached: number;
  /** Pages of swapped-out sequences held in swap slots. */
  pagesSwapped: number;
  swapSlotsTotal: number;
  swapSlotsUsed: number;
  /** Unused slots of held pages: the tails of partial last pages. */
  wastedSlots: number;
  /** wastedSlots / (pagesUsed * pageSize); 0 when nothing is held. */
  wasteFraction: number;
  /** Tokens found in the prefix cache by createSequence, since the cache was made. */
  prefixHitTokens: number;
}

/** Bookkeeping copied out for tests and debugging (O(pages)). */
export interface KVCacheSnapshot {
  /** Holders of each page. */
  refcounts: Int32Array;
  /** The free list, bottom to top. */
  freePages: Int32Array;
  /** Unheld prefix-cache pages, least recently released first. */
  cachedPages: Int32Array;
}

/**
 * The native pool calls that create, destroy and move whole pages. A cache sharded over several devices
 * (lib/sharded) passes calls that act on every shard's pool and throw where this cache would check a
 * failed status: its bookkeeping then rolls back as for any failure (what other shards wrote lies in
 * pages or swap slots that the failed operation gives back).
 */
export type PagePoolCalls = {
  [Name in
    | "pkv_kvpool_create"
    | "pkv_kvpool_destroy"
    | "pkv_kvpool_copy_pages"
    | "pkv_kvpool_swap_out"
    | "pkv_kvpool_swap_in"]: (...args: Parameters<ReturnType<typeof native>[Name]>) => number;
};

export class KVCache extends NativeObject {
  readonly config: KVCacheConfig;
  readonly #pageSize: number;
  readonly #tokenElems: number; // numKvHeads * headDim: 16-bit values per token per layer, K or V
  readonly #values: DType; // the 16-bit type writeKV takes and readKV returns (an FP8 cache's queryDtype)
  readonly #table: BlockTable;
  readonly #pages: PageAllocator;
  readonly #prefix: PrefixCache;
  readonly #swap: IdStack; // free slots of the pool's pinned swap space, one page (all layers, K and V) each
  readonly #clock: ChangeClock; // stamps sequence changes, so plans can tell they are stale
  #prefixHitTokens = 0;
  // writeKV's duplicate-slot check: slots seen in the current call carry the call's stamp. 4 bytes per
  // slot, against at least 256 bytes of K and V per slot (64-dim heads, fp16): under 2% of the pool.
  #slotStamps: Int32Array | null = null;
  #stamp = 0;
  // One-element page lists for copy-on-write (passed as arrays, never as ptr(): see DESIGN, bun:ffi facts).
  readonly #from = new Int32Array(1);
  readonly #to = new Int32Array(1);
  readonly #calls: PagePoolCalls;

  constructor(runtime: RuntimeContext, options: KVCacheOptions, calls: PagePoolCalls = native()) {
    const config = resolveConfig(options);
    const create = calls.pkv_kvpool_create;
    const handle = outPointer("pkv_kvpool_create", (out) => create(runtime.handle, encodeConfig(config), out));
    let table: BlockTable;
    try {
      const tableAddress = new BigUint64Array(1);
      const dirtyAddress = new BigUint64Array(1);
      check(native().pkv_kvpool_table_addresses(handle, tableAddress, dirtyAddress), "pkv_kvpool_table_addresses");
      const address = (value: bigint) => Number(value) as Pointer;
      table = new BlockTable(
        address(tableAddress[0]!),
        address(dirtyAddress[0]!),
        config.maxSequences,
        config.maxPagesPerSequence,
      );
    } catch (error) {
      calls.pkv_kvpool_destroy(handle);
      throw error;
    }
    const clock = new ChangeClock();
    super(
      handle,
      (h) => calls.pkv_kvpool_destroy(h),
      "KV cache",
      runtime,
      () => {
        table.detach();
        clock.disposed = true; // every plan of this cache is stale from now on
      },
    );
    this.#clock = clock;
    this.#calls = calls;
    this.config = config;
    this.#pageSize = config.pageSize;
    this.#tokenElems = config.numKvHeads * config.headDim;
    this.#values = valueDtype(config.dtype, config.queryDtype);
    this.#table = table;
    this.#pages = new PageAllocator(config.numPages, config.pageSize);
    this.#prefix = new PrefixCache(config.numPages, config.pageSize);
    this.#swap = new IdStack(config.swapPages);
  }

  /** The native pool handle, for the decode plan; throws BadStateError once disposed. */
  get poolHandle(): Pointer {
    return this.handle;
  }

  /**
   * A new, empty sequence. With `tokens` (the prompt's token ids), the longest run of leading full pages
   * found in the prefix cache is attached: `seq.length` and `seq.prefixHitTokens` say how many tokens
   * already hold K and V. Append the remaining tokens (`tokens.subarray(seq.prefixHitTokens)`) as usual.
   */
  createSequence(options?: { tokens?: Int32Array | number[] }): Sequence {
    this.handle;
    const { tokens: given } = checkOptions("createSequence", options);
    const tokens = given === undefined ? null : checkTokens("createSequence", given);
    if (this.#table.freeRowCount === 0) throw this.#noRow("createSequence");
    const P = this.#pageSize;
    const row = this.#table.acquireRow();
    let pages = 0;
    let link = 0;
    if (tokens) {
      const limit = Math.min(Math.floor(tokens.length / P), this.#table.width);
      for (; pages < limit; pages++) {
        const page = this.#prefix.lookup(link, tokens, pages * P);
        if (page < 0) break;
        this.#holdCached(page);
        this.#table.set(row, pages, page);
        link = this.#prefix.linkOf(page);
      }
    }
    this.#prefixHitTokens += pages * P;
    return new Sequence({
      owner: this,
      state: "live",
      row,
      length: pages * P,
      prefixHitTokens: pages * P,
      hashing: true,
      registered: pages,
      link,
      tail: new Int32Array(P),
      swapMap: null,
      version: this.#clock.tick(),
      change: "created",
    });
  }

  /**
   * Reserves tokens at the end of the sequence and returns their slots (page * pageSize + offset), for
   * writeKV. `tokens` is a count, or the tokens' ids: with ids (every token since the sequence began),
   * pages the append fills are registered in the prefix cache at the sequence's next append, fork,
   * swapOut or release (by then their K and V are written). With `out`, the slots go there (no allocation)
   * and `out` is returned. Allocates pages only when the last one is full; a shared partial last page
   * is copied first.
   */
  append(seq: Sequence, tokens: number | Int32Array | number[], out?: Int32Array): Int32Array {
    const s = this.#live(seq, "append");
    let n: number;
    let ids: ArrayLike<number> | null = null;
    if (typeof tokens === "number") {
      n = checkCount("append", "token count", tokens);
    } else {
      ids = checkTokens("append", tokens);
      n = ids.length;
    }
    if (out !== undefined && (!(out instanceof Int32Array) || out.length < n))
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `append: out must be an Int32Array of at least ${n} slots`,
      );
    const P = this.#pageSize;
    const { row, length } = s;
    const have = Math.ceil(length / P);
    const need = Math.ceil((length + n) / P);
    if (need > this.#table.width)
      throw new OutOfRangeError(
        Status.OUT_OF_RANGE,
        `append: ${length + n} tokens need ${need} pages, more than maxPagesPerSequence ${this.#table.width}`,
      );
    // A partial last page that another holder or the prefix cache also reads (a fork's, or a published
    // page a truncate cut into) is copied before the new tokens are written.
    const last = length % P !== 0 ? this.#table.get(row, have - 1) : -1;
    const copyLast = n > 0 && last >= 0 && (this.#pages.refs(last) > 1 || this.#prefix.linkOf(last) !== 0);
    this.#reservePages("append", need - have + (copyLast ? 1 : 0));
    this.#register(s);
    if (copyLast) this.#copyOnWrite(row, have - 1);
    for (let c = have; c < need; c++) this.#table.set(row, c, this.#takePage());
    const slots = out ?? new Int32Array(n);
    this.#slots(row, length, n, slots);
    for (let c = Math.floor(length / P); c < need; c++)
      this.#pages.setFill(this.#table.get(row, c), Math.min(P, length + n - c * P));
    if (ids === null) {
      if (n > 0) s.hashing = false; // the chain needs every token's id
    } else if (s.hashing) this.#keepTail(s, ids);
    s.length = length + n;
    if (n > 0) this.#changed(s, "appended to");
    return slots;
  }

  /**
   * Rolls a live sequence back to its first `newLength` tokens (speculative decoding's rejected drafts):
   * pages past the new end are dropped (freed, or parked in the prefix cache if registered), a partial
   * last page is kept. Nothing is written: a kept last page that is shared or published in the prefix
   * cache stays as it is for its other readers, and the next append copies it before writing. Cutting
   * into registered pages ends the sequence's prefix registration (their ids are no longer kept).
   */
  truncate(seq: Sequence, newLength: number): void {
    const s = this.#live(seq, "truncate");
    const length = s.length;
    const n = checkCount("truncate", "newLength", newLength, 0, length);
    if (n === length) return;
    const P = this.#pageSize;
    const keep = Math.ceil(n / P);
    for (let c = Math.ceil(length / P) - 1; c >= keep; c--) this.#drop(this.#table.get(s.row, c));
    const last = keep > 0 ? this.#table.get(s.row, keep - 1) : -1;
    // A private unpublished page's fill is this sequence's; a shared or published one stays full for the others.
    if (last >= 0 && this.#pages.refs(last) === 1 && this.#prefix.linkOf(last) === 0)
      this.#pages.setFill(last, n - (keep - 1) * P);
    if (n < s.registered * P) {
      s.registered = Math.floor(n / P);
      s.link = s.registered > 0 ? this.#prefix.linkOf(this.#table.get(s.row, s.registered - 1)) : 0;
      s.hashing = n === s.registered * P && s.hashing; // the ids of a partly kept registered page are gone
    }
    s.length = n;
    this.#changed(s, "truncated");
  }

  /** Where one layer keeps its pages (addresses, HND strides), for a model that writes K and V in place. */
  layout(layer: number): KVPoolLayout {
    return readLayout(this.handle, layer, this.config.numLayers);
  }

  /** Page ids, offsets and slots of a live sequence's tokens from..from+count (default: all of them). */
  positions(seq: Sequence, from = 0, count?: number): TokenPositions {
    const s = this.#live(seq, "positions");
    const start = checkCount("positions", "from", from, 0, s.length);
    const n = checkCount("positions", "count", count ?? s.length - start, 0, s.length - start);
    const slots = new Int32Array(n);
    this.#slots(s.row, start, n, slots);
    return splitSlots(slots, this.#pageSize);
  }

  /** Stores K and V ([n][numKvHeads][headDim] each) of one layer at slots that append returned. */
  writeKV(layer: number, slots: Int32Array, k: KVData, v: KVData): void {
    const pool = this.handle;
    this.#checkLayer("writeKV", layer);
    if (!(slots instanceof Int32Array))
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, "writeKV: slots must be an Int32Array (from append)");
    const n = slots.length;
    const device = checkKVData("writeKV", this.#values, k, v, n * this.#tokenElems);
    this.#checkWritable(slots);
    if (device) {
      const [kb, vb] = [k as NativeBuffer, v as NativeBuffer];
      check(
        native().pkv_kvpool_write_device(pool, layer, n, slots, kb.handle, 0, vb.handle, 0),
        "pkv_kvpool_write_device",
      );
    } else
      check(native().pkv_kvpool_write(pool, layer, n, slots, k as Uint16Array, v as Uint16Array), "pkv_kvpool_write");
  }

  /** Copies one layer of a live sequence's K and V to the host, [length][numKvHeads][headDim] each. */
  readKV(layer: number, seq: Sequence): { k: Uint16Array; v: Uint16Array } {
    const s = this.#live(seq, "readKV");
    this.#checkLayer("readKV", layer);
    const slots = new Int32Array(s.length);
    this.#slots(s.row, 0, s.length, slots);
    const k = new Uint16Array(s.length * this.#tokenElems);
    const v = new Uint16Array(s.length * this.#tokenElems);
    check(native().pkv_kvpool_read(this.handle, layer, s.length, slots, k, v), "pkv_kvpool_read");
    return { k, v };
  }

  /**
   * FP8 caches: one layer of a live sequence as stored, e4m3 codes [length][numKvHeads][headDim] and their
   * scales [length][numKvHeads] (a value is code * scale), for tests and debugging. Other caches throw.
   */
  readKVRaw(
    layer: number,
    seq: Sequence,
  ): { k: Uint8Array; v: Uint8Array; kScales: Float32Array; vScales: Float32Array } {
    const s = this.#live(seq, "readKVRaw");
    this.#checkLayer("readKVRaw", layer);
    if (this.config.dtype !== "fp8_e4m3")
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `readKVRaw: a ${this.config.dtype} cache stores values, not codes and scales (use readKV)`,
      );
    const slots = new Int32Array(s.length);
    this.#slots(s.row, 0, s.length, slots);
    const rows = s.length * this.config.numKvHeads;
    const out = {
      k: new Uint8Array(rows * this.config.headDim),
      v: new Uint8Array(rows * this.config.headDim),
      kScales: new Float32Array(rows),
      vScales: new Float32Array(rows),
    };
    check(
      native().pkv_kvpool_read_raw(this.handle, layer, s.length, slots, out.k, out.v, out.kScales, out.vScales),
      "pkv_kvpool_read_raw",
    );
    return out;
  }

  /** A new sequence sharing all of the parent's pages; whichever appends first copies a shared partial page. */
  fork(seq: Sequence): Sequence {
    const s = this.#live(seq, "fork");
    if (this.#table.freeRowCount === 0) throw this.#noRow("fork");
    this.#register(s);
    const row = this.#table.acquireRow();
    const pages = Math.ceil(s.length / this.#pageSize);
    this.#table.copyRow(s.row, row, pages);
    for (let c = 0; c < pages; c++) this.#pages.retain(this.#table.get(row, c));
    return new Sequence({
      owner: this,
      state: "live",
      row,
      length: s.length,
      prefixHitTokens: 0,
      hashing: s.hashing,
      registered: s.registered,
      link: s.link,
      tail: s.tail.slice(),
      swapMap: null,
      version: this.#clock.tick(),
      change: "created",
    });
  }

  /** Ends a live or swapped-out sequence: its pages return to the free list, or to the prefix cache if registered. */
  release(seq: Sequence): void {
    this.#end(seq, "release", true);
  }

  /**
   * Ends a sequence like release, but registers none of its not-yet-registered pages in the prefix cache:
   * for a sequence whose last K/V writes may be incomplete (a failed step), so no later request reuses them.
   */
  discard(seq: Sequence): void {
    this.#end(seq, "discard", false);
  }

  #end(seq: Sequence, op: string, register: boolean): void {
    const s = this.#owned(seq, op);
    if (s.state === "released")
      throw new BadStateError(Status.BAD_STATE, `${op}: sequence ${seq.id} was already released`);
    const pages = Math.ceil(s.length / this.#pageSize);
    // Last page first, so the prefix cache evicts a prompt's tail before its head.
    if (s.state === "live") {
      if (register) this.#register(s);
      for (let c = pages - 1; c >= 0; c--) this.#drop(this.#table.get(s.row, c));
      this.#table.releaseRow(s.row);
    } else {
      const map = s.swapMap!;
      for (let c = pages - 1; c >= 0; c--) {
        const entry = map[c]!;
        if (entry >= 0) {
          this.#pages.holdSwapped(entry, -1);
          this.#drop(entry);
        } else this.#swap.give(-entry - 1);
      }
    }
    s.state = "released";
    s.row = -1;
    s.swapMap = null;
    s.tail = new Int32Array(0);
    this.#changed(s, op === "release" ? "released" : "discarded");
  }

  /**
   * Moves a live sequence's private pages to swap slots and frees them and its row. Pages it shares stay
   * resident (held) while it is out. Its registered pages stay findable in the prefix cache until evicted.
   */
  swapOut(seq: Sequence): void {
    const s = this.#live(seq, "swapOut");
    const pages = Math.ceil(s.length / this.#pageSize);
    // Registering can only turn private pages into shared ones, so check before it and count after.
    const needed = this.#privatePages(s.row, pages);
    if (needed > this.#swap.count)
      throw new SwapFullError(
        Status.SWAP_FULL,
        this.#swap.total === 0
          ? `swapOut: the cache was created with swapPages 0`
          : `swapOut: sequence ${seq.id} needs ${needed} swap slots, ${this.#swap.count} of ${this.#swap.total} are free`,
      );
    this.#register(s);
    const moving = this.#privatePages(s.row, pages);
    const map = new Int32Array(pages);
    const from = new Int32Array(moving);
    const to = new Int32Array(moving);
    for (let c = 0, i = 0; c < pages; c++) {
      const page = this.#table.get(s.row, c);
      if (this.#pages.refs(page) !== 1) {
        map[c] = page;
        this.#pages.holdSwapped(page, 1);
        continue;
      }
      from[i] = page;
      to[i] = this.#swap.take();
      map[c] = -to[i]! - 1;
      i++;
    }
    try {
      check(this.#calls.pkv_kvpool_swap_out(this.handle, moving, from, to), "pkv_kvpool_swap_out");
    } catch (error) {
      for (let c = 0; c < pages; c++) if (map[c]! >= 0) this.#pages.holdSwapped(map[c]!, -1);
      for (let i = moving - 1; i >= 0; i--) this.#swap.give(to[i]!);
      throw error;
    }
    for (let i = 0; i < moving; i++) this.#drop(from[i]!);
    this.#table.releaseRow(s.row);
    s.row = -1;
    s.swapMap = map;
    s.state = "swapped";
    this.#changed(s, "swapped out");
  }

  /** Brings a swapped-out sequence back into fresh pages and a row; its K and V read back identical. */
  swapIn(seq: Sequence): void {
    const s = this.#owned(seq, "swapIn");
    if (s.state !== "swapped")
      throw new BadStateError(Status.BAD_STATE, `swapIn: sequence ${seq.id} is ${s.state}, not swapped out`);
    const map = s.swapMap!;
    let moving = 0;
    for (let c = 0; c < map.length; c++) if (map[c]! < 0) moving++;
    if (this.#table.freeRowCount === 0) throw this.#noRow("swapIn");
    this.#reservePages("swapIn", moving);
    const from = new Int32Array(moving);
    const to = new Int32Array(moving);
    for (let c = 0, i = 0; c < map.length; c++)
      if (map[c]! < 0) {
        from[i] = -map[c]! - 1;
        to[i++] = this.#takePage();
      }
    try {
      check(this.#calls.pkv_kvpool_swap_in(this.handle, moving, from, to), "pkv_kvpool_swap_in");
    } catch (error) {
      for (let i = moving - 1; i >= 0; i--) this.#drop(to[i]!);
      throw error;
    }
    const row = this.#table.acquireRow();
    const P = this.#pageSize;
    for (let c = 0, i = 0; c < map.length; c++) {
      let page = map[c]!;
      if (page < 0) {
        this.#swap.give(from[i]!);
        page = to[i++]!;
        this.#pages.setFill(page, Math.min(P, s.length - c * P));
      } else this.#pages.holdSwapped(page, -1);
      this.#table.set(row, c, page);
    }
    s.row = row;
    s.swapMap = null;
    s.state = "live";
    this.#changed(s, "swapped in");
  }

  /**
   * For the decode plan: the block-table row and token count of each sequence, into rows[i] and lengths[i].
   * Every sequence must be a live sequence of this cache. Returns the guard that tells the engine, at each
   * run, whether any of them changed since (which makes the plan stale).
   */
  describeBatch(sequences: readonly Sequence[], rows: Int32Array, lengths: Int32Array): PlanGuard {
    this.handle;
    if (!Array.isArray(sequences))
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, "describeBatch: sequences must be an array of Sequences");
    const n = sequences.length;
    if (!(rows instanceof Int32Array) || !(lengths instanceof Int32Array) || rows.length < n || lengths.length < n)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `describeBatch: rows and lengths must be Int32Arrays of at least ${n}`,
      );
    for (let i = 0; i < n; i++) {
      const s = this.#live(sequences[i]!, "describeBatch");
      rows[i] = s.row;
      lengths[i] = s.length;
    }
    return new PlanGuard(this.#clock, sequences.slice());
  }

  stats(): KVCacheStats {
    this.handle;
    const pages = this.#pages;
    const used = pages.usedCount;
    return {
      pagesTotal: pages.numPages,
      pagesUsed: used,
      pagesFree: pages.freeCount,
      pagesShared: pages.sharedCount,
      pagesCached: this.#prefix.evictableCount,
      pagesSwapped: this.#swap.total - this.#swap.count,
      swapSlotsTotal: this.#swap.total,
      swapSlotsUsed: this.#swap.total - this.#swap.count,
      wastedSlots: pages.wastedSlots,
      wasteFraction: used === 0 ? 0 : pages.wastedSlots / (used * this.#pageSize),
      prefixHitTokens: this.#prefixHitTokens,
    };
  }

  /** Page ids of a live or swapped-out sequence, in order; -1 for a page that is in swap space. */
  pagesOf(seq: Sequence): Int32Array {
    const s = this.#owned(seq, "pagesOf");
    if (s.state === "released") throw new BadStateError(Status.BAD_STATE, `pagesOf: sequence ${seq.id} was released`);
    if (s.state === "swapped") return s.swapMap!.map((entry) => (entry >= 0 ? entry : -1));
    const out = new Int32Array(Math.ceil(s.length / this.#pageSize));
    for (let c = 0; c < out.length; c++) out[c] = this.#table.get(s.row, c);
    return out;
  }

  snapshot(): KVCacheSnapshot {
    this.handle;
    const refcounts = new Int32Array(this.config.numPages);
    for (let p = 0; p < refcounts.length; p++) refcounts[p] = this.#pages.refs(p);
    return { refcounts, freePages: this.#pages.freePages(), cachedPages: this.#prefix.parkedPages() };
  }

  // ---- checks ------------------------------------------------------------------------------------

  #owned(seq: Sequence, op: string): SequenceRecord {
    this.handle;
    if (!(seq instanceof Sequence)) throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `${op}: not a Sequence`);
    const s = seq[record];
    if (s.owner !== this)
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `${op}: sequence ${seq.id} belongs to another cache`);
    return s;
  }

  /** A sequence of this cache that is live: not released, not swapped out. */
  #live(seq: Sequence, op: string): SequenceRecord {
    const s = this.#owned(seq, op);
    if (s.state !== "live")
      throw new BadStateError(
        Status.BAD_STATE,
        `${op}: sequence ${seq.id} is ${s.state === "swapped" ? "swapped out (swapIn first)" : "released"}`,
      );
    return s;
  }

  #checkLayer(op: string, layer: number): void {
    checkIndex(op, "layer", layer, this.config.numLayers);
  }

  /** Stamps a change to a sequence's pages, row, length or state: plans that hold it become stale. */
  #changed(s: SequenceRecord, change: string): void {
    s.version = this.#clock.tick();
    s.change = change;
  }

  /**
   * Slots must lie in pages that exactly one live sequence holds and the prefix cache does not list:
   * a write anywhere else would change another sequence's or a cached prompt's K and V. No slot twice
   * (the GPU would write them in no defined order).
   */
  #checkWritable(slots: Int32Array): void {
    const P = this.#pageSize;
    const limit = this.config.numPages * P;
    if (this.#stamp === 0x7fffffff || this.#slotStamps === null) {
      this.#slotStamps = new Int32Array(limit);
      this.#stamp = 0;
    }
    const stamp = ++this.#stamp;
    const stamps = this.#slotStamps;
    for (let i = 0; i < slots.length; i++) {
      const slot = slots[i]!;
      if (slot < 0 || slot >= limit)
        throw new OutOfRangeError(Status.OUT_OF_RANGE, `writeKV: slots[${i}] = ${slot} outside 0..${limit - 1}`);
      const page = (slot / P) | 0;
      if (!this.#pages.writable(page) || this.#prefix.linkOf(page) !== 0)
        throw new BadStateError(
          Status.BAD_STATE,
          `writeKV: slots[${i}] = ${slot} is in page ${page}, which is ${this.#describePage(page)}; write only slots append returned, before forking`,
        );
      if (stamps[slot] === stamp)
        throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `writeKV: slot ${slot} appears twice`);
      stamps[slot] = stamp;
    }
  }

  #describePage(page: number): string {
    const refs = this.#pages.refs(page);
    if (refs === 0) return this.#prefix.linkOf(page) !== 0 ? "cached (no holder)" : "free";
    if (this.#prefix.linkOf(page) !== 0) return "registered in the prefix cache";
    return refs > 1 ? `shared by ${refs} sequences` : "held by a swapped-out sequence";
  }

  #privatePages(row: number, pages: number): number {
    let count = 0;
    for (let c = 0; c < pages; c++) if (this.#pages.refs(this.#table.get(row, c)) === 1) count++;
    return count;
  }

  #noRow(op: string): OutOfRangeError {
    return new OutOfRangeError(
      Status.OUT_OF_RANGE,
      `${op}: all ${this.#table.rows} block-table rows are in use (maxSequences); release or swap out a sequence`,
    );
  }

  /** Throws unless `count` pages can be taken from the free list and the evictable prefix cache. */
  #reservePages(op: string, count: number): void {
    const available = this.#pages.freeCount + this.#prefix.evictableCount;
    if (count > available)
      throw new OutOfPagesError(
        Status.OUT_OF_PAGES,
        `${op}: needs ${count} pages, ${this.#pages.freeCount} free and ${this.#prefix.evictableCount} evictable of ${this.#pages.numPages}`,
      );
  }

  // ---- page movement -----------------------------------------------------------------------------

  /** A page for a new holder: free, else the least recently released cached page (caller reserved it). */
  #takePage(): number {
    if (this.#pages.freeCount === 0) this.#pages.free(this.#prefix.evict());
    return this.#pages.take();
  }

  /** Adds a holder to a registered page, taking it out of the evictable set if it had none. */
  #holdCached(page: number): void {
    if (this.#prefix.isParked(page)) this.#prefix.unpark(page);
    this.#pages.retain(page);
  }

  /** Drops one holder of a page; with none left it is parked in the prefix cache if registered, else freed. */
  #drop(page: number): void {
    if (this.#pages.release(page) !== 0) return;
    if (this.#prefix.linkOf(page) !== 0) this.#prefix.park(page);
    else this.#pages.free(page);
  }

  /** Gives the row a private copy of its shared (or published) partial page at `column`. */
  #copyOnWrite(row: number, column: number): void {
    const shared = this.#table.get(row, column);
    const copy = this.#takePage();
    this.#from[0] = shared;
    this.#to[0] = copy;
    try {
      check(this.#calls.pkv_kvpool_copy_pages(this.handle, 1, this.#from, this.#to), "pkv_kvpool_copy_pages");
    } catch (error) {
      this.#drop(copy);
      throw error;
    }
    this.#pages.setFill(copy, this.#pages.fillOf(shared));
    this.#drop(shared); // others still hold it, or (cut by a truncate) the prefix cache keeps it
    this.#table.set(row, column, copy);
  }

  /** Writes the slots of tokens [from, from + n) of a row into out[0 .. n). */
  #slots(row: number, from: number, n: number, out: Int32Array): void {
    const P = this.#pageSize;
    for (let i = 0, pos = from; i < n; ) {
      const column = (pos / P) | 0;
      const offset = pos - column * P;
      const base = this.#table.get(row, column) * P + offset;
      const count = Math.min(P - offset, n - i);
      for (let j = 0; j < count; j++) out[i + j] = base + j;
      i += count;
      pos += count;
    }
  }

  // ---- prefix-cache chain ------------------------------------------------------------------------

  /**
   * Registers the full pages a hashing sequence filled since its last registration. Those pages are private
   * (fork, swapOut and release register first). Where the prefix cache already holds the same link, the
   * sequence switches to the cached page and frees its own copy: identical prompts end up sharing pages.
   */
  #register(s: SequenceRecord): void {
    if (!s.hashing) return;
    const P = this.#pageSize;
    const full = Math.floor(s.length / P);
    if (full <= s.registered) return;
    let link = s.link;
    for (let c = s.registered; c < full; c++) {
      const offset = (c - s.registered) * P;
      const page = this.#table.get(s.row, c);
      const cached = this.#prefix.lookup(link, s.tail, offset);
      if (cached < 0) {
        link = this.#prefix.register(page, link, s.tail, offset);
        continue;
      }
      this.#holdCached(cached);
      this.#table.set(s.row, c, cached);
      this.#drop(page);
      link = this.#prefix.linkOf(cached);
      this.#changed(s, "moved onto a prefix-cache page");
    }
    const done = (full - s.registered) * P;
    s.tail.copyWithin(0, done, s.length - s.registered * P);
    s.registered = full;
    s.link = link;
  }

  /** Keeps the ids of appended tokens until their pages are registered. */
  #keepTail(s: SequenceRecord, ids: ArrayLike<number>): void {
    const kept = s.length - s.registered * this.#pageSize;
    if (kept + ids.length > s.tail.length) {
      const grown = new Int32Array(Math.max(2 * s.tail.length, kept + ids.length));
      grown.set(s.tail.subarray(0, kept));
      s.tail = grown;
    }
    for (let i = 0; i < ids.length; i++) s.tail[kept + i] = ids[i]!;
  }
}

export { Sequence, type SequenceState } from "./cache/sequence";
