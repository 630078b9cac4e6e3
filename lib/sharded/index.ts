// Several devices of one host: a runtime per device, one KV cache and one decode engine sharded by KV heads.
export { createShardedRuntime, ShardedRuntime, type ShardedRuntimeOptions } from "./runtime";
export { ShardedKVCache, type ShardedKVCacheOptions, type ShardedKVData, type WriteOptions } from "./cache";
export { ShardedDecodeEngine, ShardedPlan, type CreateShardedEngineOptions, type ShardedRunOptions } from "./engine";
export { type HeadLayout, layoutHeads } from "./heads";
