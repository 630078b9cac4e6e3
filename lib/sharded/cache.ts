// A KV cache sharded by KV heads over several devices: one logical cache (one page allocator, one block
// table, one prefix cache: the same page ids on every device) whose pages exist in every device's pool,
// each pool holding that device's KV heads. The logical cache is a KVCache on shard 0 whose page moves
// (copy-on-write, swap) act on every shard's pool (ShardPools); K and V writes and reads go to each
// shard with its heads. Whatever fails on one shard leaves every shard as it was.
import type { Pointer } from "bun:ffi";
import { NativeBuffer } from "../buffers";
import { type KVData, checkKVData } from "../cache/kv-arguments";
import type { KVCacheConfig, KVCacheOptions } from "../cache/config";
import type { PlanGuard } from "../cache/plan-guard";
import { valueDtype } from "../dtype";
import { BadStateError, InvalidArgumentError, OutOfRangeError, Status, UnsupportedError } from "../errors";
import { native } from "../ffi/loader";
import { KVCache, type KVCacheSnapshot, type KVCacheStats, type Sequence } from "../kvcache";
import { INT32_MAX, checkCount, checkIndex, checkOptions, show } from "../validate";
import { type HeadLayout, copyHeads, kvHeadOf, layoutHeads } from "./heads";
import { type ShardConfigOf, ShardPools } from "./pools";
import type { ShardedContext } from "./context";

export interface ShardedKVCacheOptions extends KVCacheOptions {
  /** The model's KV heads: each device holds numKvHeads / devices of them (or one, replicated). */
  numKvHeads: number;
}

/** Per-shard K or V: shard s's [n][kvHeadsPerShard][headDim], a host array or a buffer of shard s's runtime. */
export type ShardedKVData = readonly KVData[];

export interface WriteOptions {
  /**
   * Default true: the slots' previous K and V are read from every shard but the last first, so a failure
   * on shard k restores the shards before it. false skips that read (a host round trip per shard, which
   * waits for the device); a failure then leaves the slots rewritten on the shards before k, to be
   * written again.
   */
  atomic?: boolean;
}

export class ShardedKVCache implements Disposable {
  readonly runtime: ShardedContext;
  readonly heads: HeadLayout;
  /** The logical cache: bookkeeping for all shards, and shard 0's pool. Its sequences are this cache's. */
  readonly logical: KVCache;
  readonly #pools: ShardPools;
  readonly #shardElems: number; // 16-bit values per token per layer on one shard, K or V
  #broken: string | null = null;

  constructor(runtime: ShardedContext, options: ShardedKVCacheOptions, configOf?: ShardConfigOf) {
    if (typeof options !== "object" || options === null)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `createKVCache: options ${show(options)} is not an object`,
      );
    // Sharded writes restore a failed shard from values read back; FP8 rows re-quantized that way need
    // not come back bit for bit, so FP8 pages are not sharded until they travel as raw codes and scales.
    if (options.dtype === "fp8_e4m3")
      throw new UnsupportedError(
        Status.UNSUPPORTED,
        "createKVCache: a sharded cache holds f16 or bf16 pages, not fp8_e4m3",
      );
    this.runtime = runtime;
    const numKvHeads = checkCount("createKVCache", "numKvHeads", options.numKvHeads, 1, INT32_MAX);
    this.heads = layoutHeads("createKVCache", numKvHeads, runtime.size);
    this.#pools = new ShardPools(runtime.runtimes, runtime.devices, configOf);
    this.logical = new KVCache(
      runtime.runtimes[0]!,
      { ...options, numKvHeads: this.heads.kvHeadsPerShard },
      this.#pools,
    );
    this.#shardElems = this.heads.kvHeadsPerShard * this.logical.config.headDim;
  }

  get shards(): number {
    return this.heads.shards;
  }

  /** The model's shape: the logical cache's configuration with every KV head (each shard holds its share). */
  get config(): KVCacheConfig {
    return { ...this.logical.config, numKvHeads: this.heads.numKvHeads };
  }

  /** Shard 0's pool: the decode plan reads the logical block table from it. */
  get poolHandle(): Pointer {
    this.#usable();
    return this.logical.poolHandle;
  }

  /** Each shard's native pool, in shard order. */
  poolHandleOf(shard: number): Pointer {
    this.logical.handle;
    const pool = this.#pools.handles[shard];
    if (pool === undefined)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `poolHandleOf: shard ${show(shard)} is not in 0..${this.shards - 1}`,
      );
    return pool;
  }

  // ---- the logical cache's operations, for every shard at once ------------------------------------

  createSequence(options?: { tokens?: Int32Array | number[] }): Sequence {
    this.#usable();
    return this.logical.createSequence(options);
  }
  append(seq: Sequence, tokens: number | Int32Array | number[], out?: Int32Array): Int32Array {
    this.#usable();
    return this.logical.append(seq, tokens, out);
  }
  fork(seq: Sequence): Sequence {
    this.#usable();
    return this.logical.fork(seq);
  }
  release(seq: Sequence): void {
    this.logical.release(seq);
  }
  discard(seq: Sequence): void {
    this.logical.discard(seq);
  }
  swapOut(seq: Sequence): void {
    this.#usable();
    this.logical.swapOut(seq);
  }
  swapIn(seq: Sequence): void {
    this.#usable();
    this.logical.swapIn(seq);
  }
  describeBatch(sequences: readonly Sequence[], rows: Int32Array, lengths: Int32Array): PlanGuard {
    this.#usable();
    return this.logical.describeBatch(sequences, rows, lengths);
  }
  /** The logical cache's stats: pages count once, though each exists on every device. */
  stats(): KVCacheStats {
    return this.logical.stats();
  }
  pagesOf(seq: Sequence): Int32Array {
    return this.logical.pagesOf(seq);
  }
  snapshot(): KVCacheSnapshot {
    return this.logical.snapshot();
  }

  // ---- K and V, per shard ----------------------------------------------------------------------

  /**
   * Stores K and V of one layer at slots that append returned: the whole [n][numKvHeads][headDim] host
   * arrays (each shard takes its heads), or per-shard data in the tensor-parallel layout (shard s's
   * [n][kvHeadsPerShard][headDim], a host array or a buffer of shard s's runtime).
   */
  writeKV(
    layer: number,
    slots: Int32Array,
    k: KVData | ShardedKVData,
    v: KVData | ShardedKVData,
    options?: WriteOptions,
  ): void {
    this.#usable();
    const atomic = checkOptions("writeKV", options).atomic ?? true;
    if (typeof atomic !== "boolean")
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `writeKV: atomic ${show(atomic)} is not a boolean`);
    if (!(slots instanceof Int32Array))
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, "writeKV: slots must be an Int32Array (from append)");
    const n = slots.length;
    const kParts = this.#parts("writeKV", "k", k, n);
    const vParts = this.#parts("writeKV", "v", v, n);
    for (let s = 0; s < this.shards; s++) {
      checkKVData(
        `writeKV: shard ${s}`,
        valueDtype(this.logical.config.dtype),
        kParts[s],
        vParts[s],
        n * this.#shardElems,
      );
      for (const part of [kParts[s]!, vParts[s]!]) {
        const home = this.runtime.shardOf(part);
        if (home !== undefined && home !== s)
          throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `writeKV: shard ${s}'s part lives on shard ${home}`);
      }
    }
    checkIndex("writeKV", "layer", layer, this.logical.config.numLayers);
    const limit = this.logical.config.numPages * this.logical.config.pageSize;
    const bad = slots.findIndex((slot) => slot < 0 || slot >= limit);
    if (bad >= 0)
      throw new OutOfRangeError(Status.OUT_OF_RANGE, `writeKV: slots[${bad}] = ${slots[bad]} outside 0..${limit - 1}`);
    // The previous contents, to restore on the shards already written if a later one fails.
    const saved = atomic ? this.#readSlots(layer, slots) : null;
    this.logical.writeKV(layer, slots, kParts[0]!, vParts[0]!); // shard 0, after the cache's own checks
    for (let s = 1; s < this.shards; s++) {
      const status = writeShard(this.#pools.handles[s]!, layer, slots, kParts[s]!, vParts[s]!);
      if (status === 0) continue;
      const error = this.#pools.shardError(s, status);
      if (saved) this.#restore(layer, slots, saved, s, error);
      throw error;
    }
  }

  /** One layer of a live sequence's K and V on the host, [length][numKvHeads][headDim] each, gathered from the shards. */
  readKV(layer: number, seq: Sequence): { k: Uint16Array; v: Uint16Array } {
    const parts = this.readKVShards(layer, seq);
    const headDim = this.logical.config.headDim;
    const numKvHeads = this.heads.numKvHeads;
    const n = seq.length;
    const k = new Uint16Array(n * numKvHeads * headDim);
    const v = new Uint16Array(n * numKvHeads * headDim);
    // With replicated heads every replica holds the head; the first one's copy is read.
    for (let s = 0; s < this.shards; s += this.heads.replicas) {
      const headOf = (local: number) => kvHeadOf(this.heads, s, local);
      copyHeads(k, parts[s]!.k, n, numKvHeads, this.heads.kvHeadsPerShard, headDim, headOf, false);
      copyHeads(v, parts[s]!.v, n, numKvHeads, this.heads.kvHeadsPerShard, headDim, headOf, false);
    }
    return { k, v };
  }

  /** One layer of a live sequence's K and V as each shard holds it, [length][kvHeadsPerShard][headDim]. */
  readKVShards(layer: number, seq: Sequence): { k: Uint16Array; v: Uint16Array }[] {
    this.#usable();
    const first = this.logical.readKV(layer, seq); // checks the sequence and the layer
    const slots = this.#slotsOf(seq);
    const parts = [first];
    for (let s = 1; s < this.shards; s++) parts.push(this.#readShard(s, layer, slots));
    return parts;
  }

  dispose(): void {
    this.logical.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
  get disposed(): boolean {
    return this.logical.disposed;
  }

  // ---- helpers ---------------------------------------------------------------------------------

  /** Whole host arrays split into each shard's heads, or per-shard data as given. */
  #parts(op: string, name: string, data: KVData | ShardedKVData, n: number): readonly KVData[] {
    if (Array.isArray(data)) {
      if (data.length !== this.shards)
        throw new InvalidArgumentError(
          Status.INVALID_ARGUMENT,
          `${op}: ${name} has ${data.length} per-shard parts for ${this.shards} shards`,
        );
      return data;
    }
    if (data instanceof NativeBuffer)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `${op}: ${name} is one buffer; a sharded cache takes whole host arrays or one part per shard`,
      );
    const { numKvHeads } = this.heads;
    const headDim = this.logical.config.headDim;
    checkKVData(op, valueDtype(this.logical.config.dtype), data, data, n * numKvHeads * headDim);
    const whole = new Uint16Array(
      (data as Uint16Array).buffer,
      (data as Uint16Array).byteOffset,
      (data as Uint16Array).length,
    );
    const parts: Uint16Array[] = [];
    for (let s = 0; s < this.shards; s++) {
      const part = new Uint16Array(n * this.#shardElems);
      copyHeads(
        whole,
        part,
        n,
        numKvHeads,
        this.heads.kvHeadsPerShard,
        headDim,
        (l) => kvHeadOf(this.heads, s, l),
        true,
      );
      parts.push(part);
    }
    return parts;
  }

  #slotsOf(seq: Sequence): Int32Array {
    const P = this.logical.config.pageSize;
    const pages = this.logical.pagesOf(seq);
    const slots = new Int32Array(seq.length);
    for (let i = 0; i < slots.length; i++) slots[i] = pages[(i / P) | 0]! * P + (i % P);
    return slots;
  }

  #readShard(shard: number, layer: number, slots: Int32Array): { k: Uint16Array; v: Uint16Array } {
    const k = new Uint16Array(slots.length * this.#shardElems);
    const v = new Uint16Array(slots.length * this.#shardElems);
    const status = native().pkv_kvpool_read(this.#pools.handles[shard]!, layer, slots.length, slots, k, v);
    if (status !== 0) throw this.#pools.shardError(shard, status);
    return { k, v };
  }

  /** The slots' K and V on every shard but the last: a failure restores the shards before it, never the last. */
  #readSlots(layer: number, slots: Int32Array): { k: Uint16Array; v: Uint16Array }[] {
    const saved = [];
    for (let s = 0; s < this.shards - 1; s++) saved.push(this.#readShard(s, layer, slots));
    return saved;
  }

  /** Puts back the previous K and V on shards 0..failed-1; if that fails too, the shards disagree for good. */
  #restore(
    layer: number,
    slots: Int32Array,
    saved: { k: Uint16Array; v: Uint16Array }[],
    failed: number,
    cause: Error,
  ) {
    for (let s = 0; s < failed; s++) {
      const status = writeShard(this.#pools.handles[s]!, layer, slots, saved[s]!.k, saved[s]!.v);
      if (status === 0) continue;
      const why = this.#pools.shardError(s, status).message;
      this.#broken = `writeKV failed on shard ${failed} (${cause.message}) and restoring shard ${s} failed too (${why})`;
      return;
    }
  }

  #usable(): void {
    if (this.#broken) throw new BadStateError(Status.BAD_STATE, `the sharded cache's shards disagree: ${this.#broken}`);
  }
}

/** One shard's native write of K and V (host arrays or that shard's buffers); the status, unchecked. */
function writeShard(pool: Pointer, layer: number, slots: Int32Array, k: KVData, v: KVData): number {
  if (k instanceof NativeBuffer && v instanceof NativeBuffer)
    return native().pkv_kvpool_write_device(pool, layer, slots.length, slots, k.handle, 0, v.handle, 0);
  return native().pkv_kvpool_write(pool, layer, slots.length, slots, k as Uint16Array, v as Uint16Array);
}
