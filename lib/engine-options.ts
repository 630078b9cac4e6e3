// createDecodeEngine's options: the KV shape is stated once. An engine made from a cache takes the KV head
// count, head dim, page size and dtype from it; only the query heads and the engine's own settings are new.
import type { DecodeEngineOptions } from "./engine";
import { BadStateError, InvalidArgumentError, Status } from "./errors";

const CACHE_SHAPE = ["numKvHeads", "headDim", "pageSize", "dtype", "queryDtype"] as const;
type CacheShapeKey = (typeof CACHE_SHAPE)[number];

/** What an engine reads of a KV cache (a KVCache is one). */
export interface CacheShape {
  readonly config: Pick<DecodeEngineOptions, CacheShapeKey>;
  readonly disposed: boolean;
}

/** The cache's shape, plus the engine's own options; a shape field given too must agree with the cache. */
export type EngineFromCacheOptions = Omit<DecodeEngineOptions, CacheShapeKey> &
  Partial<Pick<DecodeEngineOptions, CacheShapeKey>> & { cache: CacheShape };

export type CreateDecodeEngineOptions = DecodeEngineOptions | EngineFromCacheOptions;

/** The explicit options an engine is built from; checks once that a cache and stated fields agree. */
export function resolveEngineOptions(options: CreateDecodeEngineOptions): DecodeEngineOptions {
  if (typeof options !== "object" || options === null)
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, "createDecodeEngine: options must be an object");
  if (!("cache" in options) || options.cache === undefined) return options as DecodeEngineOptions;
  const { cache, ...rest } = options;
  if (typeof cache !== "object" || cache === null || typeof cache.config !== "object")
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, "createDecodeEngine: cache is not a KV cache");
  if (cache.disposed) throw new BadStateError(Status.BAD_STATE, "createDecodeEngine: the KV cache was disposed");
  const shape = cache.config;
  const disagree = CACHE_SHAPE.filter((key) => rest[key] !== undefined && rest[key] !== shape[key]).map(
    (key) => `${key} ${JSON.stringify(rest[key])} (the cache has ${JSON.stringify(shape[key])})`,
  );
  if (disagree.length > 0)
    throw new InvalidArgumentError(
      Status.INVALID_ARGUMENT,
      `createDecodeEngine: ${disagree.join(", ")} disagree with the cache`,
    );
  return {
    ...rest,
    numKvHeads: shape.numKvHeads,
    headDim: shape.headDim,
    pageSize: shape.pageSize,
    dtype: shape.dtype,
    queryDtype: shape.queryDtype,
  };
}
