// A KV pool over pages the caller owns (a serving stack's own cache tensors): PersistentKV's kernels
// run on them without a copy. Ours are only the block table the plans need and its device copy; the
// caller's cache manager decides which pages a request holds and hands them to engine.planPaged.
import type { Pointer } from "bun:ffi";
import { NativeBuffer } from "../buffers";
import { type KVCacheConfig, type KVCacheOptions, encodeConfig, resolveConfig } from "../cache/config";
import { outPointer } from "../ffi/call";
import { native } from "../ffi/loader";
import { InvalidArgumentError, OutOfRangeError, Status } from "../errors";
import { NativeObject } from "../lifetime";
import type { RuntimeContext } from "../types";
import { pageBytes } from "../cache/memory";
import { type Address, checkAddress } from "./address";
import { type KVPoolLayout, readLayout } from "./layout";

/** The pool's shape; maxSequences is the most requests one plan may hold (block-table rows). */
export type KVPoolOptions = Omit<KVCacheOptions, "swapPages">;

/** Each layer's K and V pages: numPages HND pages ([page][kv head][slot][head dim]) at each address. */
export interface KVPoolMemory {
  k: readonly (Address | NativeBuffer)[];
  v: readonly (Address | NativeBuffer)[];
}

export class KVPool extends NativeObject {
  readonly config: KVCacheConfig;
  /** Bytes of one layer's K (or V) pages: what each address must hold. */
  readonly layerBytes: number;
  /** The buffers given as memory, kept reachable here: their safety net must not free what the pool reads. */
  readonly buffers: readonly NativeBuffer[];

  private constructor(handle: Pointer, runtime: RuntimeContext, config: KVCacheConfig, buffers: NativeBuffer[]) {
    super(handle, (h) => native().pkv_kvpool_destroy(h), "KV pool", runtime);
    this.config = config;
    this.layerBytes = layerBytesOf(config);
    this.buffers = buffers;
  }

  /**
   * A pool over the caller's pages: `memory.k[l]` and `memory.v[l]` address layer l's K and V (device
   * memory of the runtime; host memory on the CPU backend), as numbers, BigInts or buffers. Disposing the
   * pool frees nothing of them; they must outlive it.
   */
  static wrap(runtime: RuntimeContext, options: KVPoolOptions, memory: KVPoolMemory): KVPool {
    const method = "KVPool.wrap";
    if (typeof options === "object" && options !== null && "swapPages" in options)
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `${method}: a pool over caller memory has no swap space`);
    const config = resolveConfig({ ...options, swapPages: 0 });
    const layerBytes = layerBytesOf(config);
    if (typeof memory !== "object" || memory === null)
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `${method}: memory must be { k: [...], v: [...] }`);
    const buffers: NativeBuffer[] = [];
    const addresses = (name: "k" | "v") => {
      const list = memory[name];
      if (!Array.isArray(list) || list.length !== config.numLayers)
        throw new InvalidArgumentError(
          Status.INVALID_ARGUMENT,
          `${method}: memory.${name} must list ${config.numLayers} addresses, one per layer`,
        );
      return BigUint64Array.from(list, (entry: Address | NativeBuffer, layer) => {
        const what = `memory.${name}[${layer}]`;
        if (!(entry instanceof NativeBuffer)) return checkAddress(method, what, entry);
        entry.handle; // throws BadStateError for a disposed buffer: its memory is gone
        if (entry.bytes < layerBytes)
          throw new OutOfRangeError(
            Status.OUT_OF_RANGE,
            `${method}: ${what} holds ${entry.bytes} bytes; a layer's pages need ${layerBytes}`,
          );
        buffers.push(entry);
        return BigInt(entry.address);
      });
    };
    const k = addresses("k"),
      v = addresses("v");
    const handle = outPointer("pkv_kvpool_wrap", (out) =>
      native().pkv_kvpool_wrap(runtime.handle, encodeConfig(config), k, v, out),
    );
    return new KVPool(handle, runtime, config, buffers);
  }

  /** The native pool handle, for plans; throws BadStateError once disposed. */
  get poolHandle(): Pointer {
    return this.handle;
  }

  /** Where `layer` keeps its pages (the caller's addresses, with the HND strides). */
  layout(layer: number): KVPoolLayout {
    return readLayout(this.handle, layer, this.config.numLayers);
  }
}

function layerBytesOf(c: KVCacheConfig): number {
  return (pageBytes(c) / (2 * c.numLayers)) * c.numPages;
}
