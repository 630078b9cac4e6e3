// Sizing a KV cache from memory, like vLLM's knobs: free and total device memory, the bytes one page
// takes (all layers, K and V), a pool sized from a fraction of free memory, and swap space in bytes.
import { check } from "../ffi/call";
import { native } from "../ffi/loader";
import { InvalidArgumentError, OutOfMemoryError, Status } from "../errors";
import type { RuntimeContext } from "../types";
import { INT32_MAX, checkCount, checkFinite } from "../validate";
import { DEFAULT_MAX_SEQUENCES, DEFAULT_MAX_TOKENS, type KVCacheOptions, encodeConfig, resolveConfig } from "./config";

export interface MemoryInfo {
  /** Free device memory now (CUDA: cudaMemGetInfo; CPU backend: available host memory). */
  freeBytes: number;
  /** The device's memory (CPU backend: physical host memory). */
  totalBytes: number;
}

/** What a page's size depends on. */
export type PageShape = Pick<KVCacheOptions, "numLayers" | "pageSize" | "numKvHeads" | "headDim" | "dtype">;

/**
 * Cache options with the pool sized from memory: `memoryFraction` (0 < f <= 1) of the device's free memory
 * instead of `numPages`, and `swapBytes` of pinned host memory instead of `swapPages`.
 */
export type SizedKVCacheOptions = Omit<KVCacheOptions, "numPages" | "swapPages"> & {
  numPages?: number;
  memoryFraction?: number;
  swapPages?: number;
  swapBytes?: number;
};

export function memoryInfo(runtime: RuntimeContext): MemoryInfo {
  const free = new BigUint64Array(1),
    total = new BigUint64Array(1);
  check(native().pkv_runtime_memory_info(runtime.handle, free, total), "pkv_runtime_memory_info");
  return { freeBytes: Number(free[0]), totalBytes: Number(total[0]) };
}

/** Bytes one page id holds across the pool: every layer's K and V page. */
export function pageBytes(shape: PageShape): number {
  if (typeof shape !== "object" || shape === null)
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, "pageBytes: shape must be an object");
  const config = resolveConfig({ ...shape, numPages: 1, maxSequences: 1, maxPagesPerSequence: 1, swapPages: 0 });
  const out = new BigUint64Array(1);
  check(native().pkv_kv_page_bytes(encodeConfig(config), out), "pkv_kv_page_bytes");
  return Number(out[0]);
}

/**
 * Pages that fit in `memoryFraction` of the device's free memory (or of `freeBytes`, when given), less
 * the block table's device copy; at most what page ids and slots can address (int32).
 */
export function pagesFor(
  runtime: RuntimeContext,
  shape: PageShape & Pick<KVCacheOptions, "maxSequences" | "maxPagesPerSequence">,
  options: { memoryFraction: number; freeBytes?: number },
): number {
  const method = "pagesFor";
  if (typeof options !== "object" || options === null)
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `${method}: options must be { memoryFraction }`);
  const fraction = checkFinite(method, "memoryFraction", options.memoryFraction, Number.MIN_VALUE, 1);
  const free =
    options.freeBytes === undefined
      ? memoryInfo(runtime).freeBytes
      : checkCount(method, "freeBytes", options.freeBytes);
  const bytes = pageBytes(shape);
  const rows = checkCount(method, "maxSequences", shape.maxSequences ?? DEFAULT_MAX_SEQUENCES, 1, INT32_MAX);
  const width = shape.maxPagesPerSequence ?? Math.ceil(DEFAULT_MAX_TOKENS / shape.pageSize);
  const budget = Math.floor(free * fraction) - rows * checkCount(method, "maxPagesPerSequence", width, 1) * 4;
  const pages = Math.min(Math.floor(Math.max(0, budget) / bytes), Math.floor(INT32_MAX / shape.pageSize));
  if (pages < 1)
    throw new OutOfMemoryError(
      Status.OUT_OF_MEMORY,
      `${method}: ${fraction} of ${free} free bytes holds no page of ${bytes} bytes (with the block table's ${rows} x ${width} entries)`,
    );
  return pages;
}

/** Swap slots (pages, all layers, K and V) that fit in `swapBytes`. */
export function swapPagesFor(shape: PageShape, swapBytes: number): number {
  const bytes = checkCount("swapPagesFor", "swapBytes", swapBytes);
  return Math.min(Math.floor(bytes / pageBytes(shape)), INT32_MAX);
}

/** Plain cache options from sized ones: numPages from memoryFraction, swapPages from swapBytes. */
export function resolveSizedOptions(runtime: RuntimeContext, options: SizedKVCacheOptions): KVCacheOptions {
  if (typeof options !== "object" || options === null)
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, "createKVCache: options must be an object");
  const { memoryFraction, swapBytes, ...rest } = options;
  const both = (a: string, b: string) =>
    new InvalidArgumentError(Status.INVALID_ARGUMENT, `createKVCache: give ${a} or ${b}, not both`);
  if (memoryFraction !== undefined && rest.numPages !== undefined) throw both("numPages", "memoryFraction");
  if (swapBytes !== undefined && rest.swapPages !== undefined) throw both("swapPages", "swapBytes");
  if (memoryFraction === undefined && rest.numPages === undefined)
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, "createKVCache: numPages or memoryFraction is required");
  const numPages = memoryFraction === undefined ? rest.numPages! : pagesFor(runtime, rest, { memoryFraction });
  const swapPages = swapBytes === undefined ? rest.swapPages : swapPagesFor(rest, swapBytes);
  return { ...rest, numPages, swapPages };
}
