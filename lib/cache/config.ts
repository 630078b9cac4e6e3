// KV cache options: validation, defaults, and the native pkv_kv_config struct.
import { type DType, type KVDType, kvDtypeCode, valueDtype } from "../dtype";
import { InvalidArgumentError, Status } from "../errors";
import { KV_CONFIG } from "../ffi/layouts";
import { INT32_MAX, checkCount } from "../validate";

export interface KVCacheOptions {
  numLayers: number;
  /** Pages in the pool; page ids are shared by all layers. */
  numPages: number;
  /** Tokens per page: a power of two, 1..256. */
  pageSize: number;
  numKvHeads: number;
  /** 64, 128 or 256. */
  headDim: number;
  /** How K and V are stored: "f16", "bf16", or "fp8_e4m3" (half the bytes; see README, FP8 KV cache). */
  dtype: KVDType;
  /**
   * The 16-bit type of the K and V values writeKV takes and readKV returns, and of q and out: the dtype
   * itself for 16-bit caches, "f16" (default) or "bf16" for FP8 ones.
   */
  queryDtype?: DType;
  /** Sequences that may be live at once (block-table rows). Default 256. */
  maxSequences?: number;
  /** Longest sequence, in pages (block-table width). Default: numPages, capped at 256K tokens. */
  maxPagesPerSequence?: number;
  /** Pinned host swap space, in pages. Default 0: swapOut throws SwapFullError. */
  swapPages?: number;
}

export type KVCacheConfig = Required<Omit<KVCacheOptions, "queryDtype">> & { queryDtype?: DType };

export const DEFAULT_MAX_SEQUENCES = 256;
// 256K tokens covers today's longest contexts; a wider row only costs pinned table memory.
export const DEFAULT_MAX_TOKENS = 262144;

function integer(name: string, value: unknown, min: number): number {
  return checkCount("createKVCache", name, value, min, INT32_MAX);
}

export function resolveConfig(options: KVCacheOptions): KVCacheConfig {
  if (typeof options !== "object" || options === null)
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, "createKVCache: options must be an object");
  kvDtypeCode(options.dtype, options.queryDtype);
  const numPages = integer("numPages", options.numPages, 1);
  const pageSize = integer("pageSize", options.pageSize, 1);
  return {
    numLayers: integer("numLayers", options.numLayers, 1),
    numPages,
    pageSize,
    numKvHeads: integer("numKvHeads", options.numKvHeads, 1),
    headDim: integer("headDim", options.headDim, 1),
    dtype: options.dtype,
    queryDtype: valueDtype(options.dtype, options.queryDtype),
    maxSequences: integer("maxSequences", options.maxSequences ?? DEFAULT_MAX_SEQUENCES, 1),
    maxPagesPerSequence: integer(
      "maxPagesPerSequence",
      options.maxPagesPerSequence ?? Math.min(numPages, Math.ceil(DEFAULT_MAX_TOKENS / pageSize)),
      1,
    ),
    swapPages: integer("swapPages", options.swapPages ?? 0, 0),
  };
}

/** The native pkv_kv_config of a resolved configuration. */
export function encodeConfig(c: KVCacheConfig): Uint8Array {
  return KV_CONFIG.encode({ ...c, dtype: kvDtypeCode(c.dtype, c.queryDtype), reserved: 0 });
}
