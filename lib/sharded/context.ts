// What the sharded cache and engine need of the runtime over several devices (ShardedRuntime is one);
// here so that they do not import the runtime that creates them.
import type { Runtime } from "../runtime";

export interface ShardedContext {
  /** Number of devices (shards). */
  readonly size: number;
  /** The device of each shard (CUDA ordinals; 0..N-1 for simulated CPU devices). */
  readonly devices: readonly number[];
  /** One runtime per shard, in shard order. */
  readonly runtimes: readonly Runtime[];
  /** The shard a buffer made through the sharded runtime lives on (undefined for buffers made otherwise). */
  shardOf(buffer: object): number | undefined;
}
