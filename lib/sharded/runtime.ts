// A runtime over several devices of one host: one Runtime per device (CUDA ordinals, or N simulated CPU
// devices, each with its own host pools), made and disposed together, with peer access between them.
import type { Backend } from "../types";
import type { DeviceBuffer } from "../buffers";
import { InvalidArgumentError, Status } from "../errors";
import { check } from "../ffi/call";
import { native } from "../ffi/loader";
import { cudaDeviceCount, openRuntime, type Runtime } from "../runtime";
import { checkCount, checkIndex, show } from "../validate";
import { ShardedKVCache, type ShardedKVCacheOptions } from "./cache";
import type { ShardedContext } from "./context";
import { type CreateShardedEngineOptions, ShardedDecodeEngine } from "./engine";

export interface ShardedRuntimeOptions {
  /** "auto" (default): CUDA when a device is visible, else the CPU backend. */
  backend?: Backend | "auto";
  /**
   * CUDA: device ordinals, or a count (the first N); default every visible device. CPU: a count of
   * simulated devices (N runtimes, N host pools), default 1.
   */
  devices?: number | readonly number[];
}

export function createShardedRuntime(options: ShardedRuntimeOptions = {}): ShardedRuntime {
  const op = "createShardedRuntime";
  if (typeof options !== "object" || options === null)
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `${op}: options ${show(options)} is not an object`);
  const requested = options.backend ?? "auto";
  if (!["auto", "cuda", "cpu"].includes(requested))
    throw new InvalidArgumentError(
      Status.INVALID_ARGUMENT,
      `${op}: backend "${requested}" is not "auto", "cuda" or "cpu"`,
    );
  const visible = cudaDeviceCount();
  const backend: Backend = requested === "auto" ? (visible > 0 ? "cuda" : "cpu") : requested;
  const limit = backend === "cuda" ? visible : 1024;
  const devices = deviceList(op, options.devices ?? (backend === "cuda" ? visible : 1), limit, backend);
  const runtimes: Runtime[] = [];
  try {
    for (const device of devices) runtimes.push(openRuntime({ backend, device }));
    return new ShardedRuntime(backend, devices, runtimes, enablePeerAccess(runtimes));
  } catch (error) {
    for (const rt of runtimes.reverse()) rt.dispose();
    throw error;
  }
}

/** Peer access between every pair; false where a pair has no peer path (copies are then staged by the driver). */
function enablePeerAccess(runtimes: readonly Runtime[]): boolean {
  let peer = true;
  for (let a = 0; a < runtimes.length; a++)
    for (let b = a + 1; b < runtimes.length; b++) {
      const status = native().pkv_runtime_enable_peer_access(runtimes[a]!.handle, runtimes[b]!.handle);
      if (status === Status.UNSUPPORTED) peer = false;
      else check(status, "pkv_runtime_enable_peer_access");
    }
  return peer;
}

function deviceList(op: string, given: unknown, limit: number, backend: Backend): number[] {
  if (typeof given === "number") {
    const n = checkCount(op, "devices", given, 1);
    if (n > limit)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `${op}: ${n} devices asked for, ${limit} ${backend === "cuda" ? "CUDA devices are visible" : "is the most simulated"}`,
      );
    return Array.from({ length: n }, (_, i) => i);
  }
  if (!Array.isArray(given) || given.length === 0)
    throw new InvalidArgumentError(
      Status.INVALID_ARGUMENT,
      `${op}: devices ${show(given)} is not a count or a non-empty array of ordinals`,
    );
  const list = given.map((d, i) => checkIndex(op, `devices[${i}]`, d, limit));
  if (new Set(list).size !== list.length)
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `${op}: devices [${list.join(", ")}] names a device twice`);
  return list;
}

export class ShardedRuntime implements ShardedContext, Disposable {
  readonly backend: Backend;
  /** The device of each shard (CUDA ordinals; 0..N-1 for simulated CPU devices). */
  readonly devices: readonly number[];
  /** One runtime per shard, in shard order. */
  readonly runtimes: readonly Runtime[];
  /** Whether every pair of devices reads the other's memory directly (peer copies over NVLink or PCIe). */
  readonly peerAccess: boolean;
  readonly #shardOf = new WeakMap<object, number>();

  constructor(backend: Backend, devices: readonly number[], runtimes: readonly Runtime[], peerAccess: boolean) {
    this.backend = backend;
    this.devices = devices;
    this.runtimes = runtimes;
    this.peerAccess = peerAccess;
  }

  /** Number of devices (shards). */
  get size(): number {
    return this.runtimes.length;
  }

  /** One logical KV cache whose pages live on every device, each holding its KV heads. */
  createKVCache(options: ShardedKVCacheOptions): ShardedKVCache {
    return new ShardedKVCache(this, options);
  }

  /** A decode engine per device, planned once per step for all of them. */
  createDecodeEngine(options: CreateShardedEngineOptions): ShardedDecodeEngine {
    return new ShardedDecodeEngine(this, options);
  }

  /** Device memory on one shard's device, remembered so that runs can check where it lives before any shard runs. */
  allocDevice(shard: number, bytes: number): DeviceBuffer {
    const buffer = this.runtime(shard).allocDevice(bytes);
    this.#shardOf.set(buffer, shard);
    return buffer;
  }

  /** The shard a buffer from allocDevice lives on (undefined for buffers made otherwise). */
  shardOf(buffer: object): number | undefined {
    return this.#shardOf.get(buffer);
  }

  runtime(shard: number): Runtime {
    return this.runtimes[checkIndex("runtime", "shard", shard, this.runtimes.length)]!;
  }

  /** Waits for the work queued on every device's own stream. */
  synchronize(): void {
    for (const rt of this.runtimes) rt.synchronize();
  }

  /** Disposes every device's runtime (and so everything made from them), last shard first. */
  dispose(): void {
    for (let s = this.runtimes.length - 1; s >= 0; s--) this.runtimes[s]!.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
