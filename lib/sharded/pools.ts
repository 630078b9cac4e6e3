// The native pools of a sharded cache, one per device, that the one logical cache moves together. The
// cache (lib/kvcache.ts) holds shard 0's pool as its own and calls these where it would call the native
// pool: each call acts on every shard, and a failure on one shard throws an error that names it. Calls
// that fail leave nothing to undo on the other shards: copy-on-write, swap-out and swap-in only write
// into pages or swap slots that the cache gives back when the call fails, so no shard keeps data that
// any sequence can read.
import type { Pointer } from "bun:ffi";
import { errorFor, type PkvError } from "../errors";
import { native } from "../ffi/loader";
import type { PagePoolCalls } from "../kvcache";
import type { RuntimeContext } from "../types";

/** The pkv_kv_config a shard's pool is made with (the cache's own, unless a test skews one shard). */
export type ShardConfigOf = (shard: number, config: Uint8Array) => Uint8Array;

export class ShardPools implements PagePoolCalls {
  readonly runtimes: readonly RuntimeContext[];
  readonly devices: readonly number[];
  /** Each shard's native pool; [0] is the one the logical cache holds (and whose pinned table plans read). */
  readonly handles: Pointer[] = [];
  readonly #configOf: ShardConfigOf;

  constructor(
    runtimes: readonly RuntimeContext[],
    devices: readonly number[],
    configOf: ShardConfigOf = (_shard, config) => config,
  ) {
    this.runtimes = runtimes;
    this.devices = devices;
    this.#configOf = configOf;
  }

  /** The typed error of a failed native call on one shard, its message naming the shard and device. */
  shardError(shard: number, status: number): PkvError {
    const message = String(native().pkv_last_error());
    return errorFor(status, `shard ${shard} (device ${this.devices[shard]}): ${message}`);
  }

  /** Runs `call` on every shard's pool in order; throws at the first shard that fails. */
  each(call: (pool: Pointer, shard: number) => number): number {
    for (let s = 0; s < this.handles.length; s++) {
      const status = call(this.handles[s]!, s);
      if (status !== 0) throw this.shardError(s, status);
    }
    return 0;
  }

  pkv_kvpool_create: PagePoolCalls["pkv_kvpool_create"] = (_runtime, config, out) => {
    const one = new BigUint64Array(1);
    for (let s = 0; s < this.runtimes.length; s++) {
      const status = native().pkv_kvpool_create(this.runtimes[s]!.handle, this.#configOf(s, config as Uint8Array), one);
      if (status !== 0) {
        const error = this.shardError(s, status);
        this.#destroyAll();
        throw error;
      }
      this.handles.push(Number(one[0]) as Pointer);
    }
    (out as BigUint64Array)[0] = BigInt(this.handles[0]!);
    return 0;
  };

  // Shard 0's status: a later shard's pool may already be gone with its runtime, which is no failure here.
  pkv_kvpool_destroy: PagePoolCalls["pkv_kvpool_destroy"] = () => this.#destroyAll();

  pkv_kvpool_copy_pages: PagePoolCalls["pkv_kvpool_copy_pages"] = (_pool, n, from, to) =>
    this.each((pool) => native().pkv_kvpool_copy_pages(pool, n, from, to));

  pkv_kvpool_swap_out: PagePoolCalls["pkv_kvpool_swap_out"] = (_pool, n, pages, slots) =>
    this.each((pool) => native().pkv_kvpool_swap_out(pool, n, pages, slots));

  pkv_kvpool_swap_in: PagePoolCalls["pkv_kvpool_swap_in"] = (_pool, n, slots, pages) =>
    this.each((pool) => native().pkv_kvpool_swap_in(pool, n, slots, pages));

  #destroyAll(): number {
    let first = 0;
    for (let s = this.handles.length - 1; s >= 0; s--) {
      const status = native().pkv_kvpool_destroy(this.handles[s]!);
      if (s === 0) first = status;
    }
    this.handles.length = 0;
    return first;
  }
}
