// The runtime: one backend (CUDA device or CPU reference), and the owner of everything made from it.
import type { Pointer } from "bun:ffi";
import { check, outPointer } from "./ffi/call";
import { checkNativeSize, DEVICE_INFO } from "./ffi/layouts";
import { native } from "./ffi/loader";
import { DeviceBuffer, MEMORY_KIND, type MemoryKind, PinnedBuffer, streamHandle } from "./buffers";
import { InvalidArgumentError, Status } from "./errors";
import { NativeObject, type Token } from "./lifetime";
import { Event, Stream } from "./streams";
import { capture, type Graph } from "./graphs";
import { KVCache } from "./kvcache";
import { type MemoryInfo, memoryInfo, resolveSizedOptions, type SizedKVCacheOptions } from "./cache/memory";
import { DecodeEngine } from "./engine";
import { type CreateDecodeEngineOptions, resolveEngineOptions } from "./engine-options";
import { calibrate, type CalibrateOptions, type ModelShape } from "./policy/calibrate";
import type { Backend, DeviceInfo, RuntimeContext } from "./types";
import { checkCount, INT32_MAX } from "./validate";
import { loadPolicy, policyKey, savePolicy } from "./policy/store";
import type { PolicyTable } from "./policy/table";

export type { Backend, DeviceInfo } from "./types";
export interface RuntimeOptions {
  /** "auto" (default) picks CUDA when a device is visible, else the CPU reference backend. */
  backend?: Backend | "auto";
  /** CUDA device ordinal (default 0). */
  device?: number;
}

const BACKEND_CODE = { cpu: 0, cuda: 1 } as const;

/** Number of visible CUDA devices (0 without a GPU or driver). */
export function cudaDeviceCount(): number {
  return native().pkv_cuda_device_count();
}

export function openRuntime(options: RuntimeOptions = {}): Runtime {
  const requested = options.backend ?? "auto";
  if (!["auto", "cuda", "cpu"].includes(requested))
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `backend "${requested}" is not "auto", "cuda" or "cpu"`);
  const backend: Backend = requested === "auto" ? (cudaDeviceCount() > 0 ? "cuda" : "cpu") : requested;
  const device = checkCount("openRuntime", "device", options.device ?? 0, 0, INT32_MAX);
  const handle = outPointer("pkv_runtime_create", (out) =>
    native().pkv_runtime_create(BACKEND_CODE[backend], device, out),
  );
  return new Runtime(handle, backend);
}

export class Runtime extends NativeObject implements RuntimeContext {
  readonly backend: Backend;
  readonly info: DeviceInfo;
  readonly #children: Set<Token>;

  constructor(handle: Pointer, backend: Backend) {
    const children = new Set<Token>();
    // The native destroy frees every child; their wrappers must refuse use from then on.
    super(
      handle,
      (h) => native().pkv_runtime_destroy(h),
      "runtime",
      undefined,
      () => {
        for (const child of children) NativeObject.retire(child);
        children.clear();
      },
    );
    this.#children = children;
    this.backend = backend;
    this.info = readDeviceInfo(handle);
  }

  adopt(token: Token): void {
    this.#children.add(token);
  }
  forget(token: Token): void {
    this.#children.delete(token);
  }

  /** Device memory (GPU; host memory on the CPU backend). */
  allocDevice(bytes: number): DeviceBuffer {
    return new DeviceBuffer(this.#alloc("device", bytes), bytes, this);
  }

  /** Page-locked host memory with zero-copy views. */
  allocPinned(bytes: number): PinnedBuffer {
    return new PinnedBuffer(this.#alloc("pinned", bytes), bytes, this);
  }

  #alloc(kind: MemoryKind, bytes: number): Pointer {
    checkCount(kind === "device" ? "allocDevice" : "allocPinned", "bytes", bytes, 1);
    return outPointer("pkv_buffer_alloc", (out) =>
      native().pkv_buffer_alloc(this.handle, MEMORY_KIND.get(kind)!, bytes, out),
    );
  }

  createStream(): Stream {
    return new Stream(
      outPointer("pkv_stream_create", (out) => native().pkv_stream_create(this.handle, out)),
      this,
    );
  }

  createEvent(): Event {
    return new Event(
      outPointer("pkv_event_create", (out) => native().pkv_event_create(this.handle, out)),
      this,
    );
  }

  /**
   * A paged KV cache whose pages live on this runtime's device. Size it with numPages, or with
   * memoryFraction (of the free device memory now); swap space with swapPages or swapBytes.
   */
  createKVCache(options: SizedKVCacheOptions): KVCache {
    return new KVCache(this, resolveSizedOptions(this, options));
  }

  /** Free and total memory of the device (CPU backend: available and physical host memory). */
  memoryInfo(): MemoryInfo {
    return memoryInfo(this);
  }

  /**
   * A decode engine: plans each step's workqueue once and runs it for every layer. Given `cache`, it takes
   * the KV head count, head dim, page size and dtype from it (any of them also given must agree).
   */
  createDecodeEngine(options: CreateDecodeEngineOptions): DecodeEngine {
    const engine = new DecodeEngine(this, resolveEngineOptions(options));
    // An adaptive engine on a calibrated GPU uses the stored table (see calibrate below).
    if (engine.policy === "adaptive" && this.backend === "cuda")
      engine.setPolicyTable(loadPolicy(policyKey(this.info.name, engine, engine.settings)));
    return engine;
  }

  /**
   * Times both decode kernels over a grid of batch shapes on this GPU (seconds) and stores
   * the adaptive policy's table on disk, where engines of the same shape and settings load it. CUDA only.
   */
  calibrate(shape: ModelShape, options: CalibrateOptions = {}): { table: PolicyTable; path: string } {
    const { table, settings } = calibrate(this, shape, options);
    return { table, path: savePolicy(policyKey(this.info.name, shape, settings), table) };
  }

  /** Records the asynchronous work `body` queues (e.g. a plan's upload and every layer's run) as a graph. */
  capture(body: () => void, stream?: Stream): Graph {
    if (typeof body !== "function")
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, "capture: body is not a function");
    streamHandle("capture", stream);
    return capture(this.handle, this, body, stream);
  }

  /** Waits for all work queued on the runtime's own stream. */
  synchronize(): void {
    check(native().pkv_runtime_synchronize(this.handle), "pkv_runtime_synchronize");
  }

  /** Streaming-read bandwidth in GB/s (16-byte loads, median of `iterations`): the decode ceiling. */
  probeReadBandwidth(options: { bytes?: number; iterations?: number } = {}): number {
    const bytes = checkCount("probeReadBandwidth", "bytes", options.bytes ?? 2 ** 31);
    const iterations = checkCount("probeReadBandwidth", "iterations", options.iterations ?? 20, 0, INT32_MAX);
    const gbps = new Float64Array(1);
    check(native().pkv_probe_read_bandwidth(this.handle, bytes, iterations, gbps), "pkv_probe_read_bandwidth");
    return gbps[0]!;
  }

  /** Evicts L2 before the next launch on the stream, as a serving loop's other layers would. */
  flushL2(stream?: Stream): void {
    check(native().pkv_flush_l2(this.handle, streamHandle("flushL2", stream)), "pkv_flush_l2");
  }
}

function readDeviceInfo(handle: Pointer): DeviceInfo {
  checkNativeSize(DEVICE_INFO, native().pkv_device_info_size());
  const raw = DEVICE_INFO.alloc();
  check(native().pkv_device_info_get(handle, raw), "pkv_device_info_get");
  const info = DEVICE_INFO.decode(raw);
  return {
    name: info.name,
    totalMemory: info.totalMemory,
    l2Bytes: info.l2Bytes,
    backend: info.backend === BACKEND_CODE.cuda ? "cuda" : "cpu",
    device: info.device,
    multiprocessors: info.multiprocessors,
    computeCapability: [info.ccMajor, info.ccMinor],
    maxSharedPerBlock: info.maxSharedPerBlock,
    maxSharedPerSM: info.maxSharedPerSm,
    maxThreadsPerSM: info.maxThreadsPerSm,
  };
}
