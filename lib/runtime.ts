// The runtime: one backend (CUDA device or CPU reference), and the owner of everything made from it.
import type { Pointer } from "bun:ffi";
import { check, outPointer } from "./ffi/call";
import { native } from "./ffi/loader";
import { DeviceBuffer, MEMORY_KIND, type MemoryKind, PinnedBuffer, streamHandle } from "./buffers";
import { InvalidArgumentError, Status } from "./errors";
import { NativeObject, type Owner, type Token } from "./lifetime";
import { Event, Stream } from "./streams";
import { capture, type Graph } from "./graphs";
import { KVCache, type KVCacheOptions } from "./kvcache";
import { DecodeEngine, type DecodeEngineOptions } from "./engine";
import { calibrate, type CalibrateOptions, type ModelShape } from "./policy/calibrate";
import { checkCount, INT32_MAX } from "./validate";
import { loadPolicy, policyKey, savePolicy } from "./policy/store";
import type { PolicyTable } from "./policy/table";

export type Backend = "cuda" | "cpu";
export interface RuntimeOptions {
  /** "auto" (default) picks CUDA when a device is visible, else the CPU reference backend. */
  backend?: Backend | "auto";
  /** CUDA device ordinal (default 0). */
  device?: number;
}

export interface DeviceInfo {
  name: string;
  backend: Backend;
  device: number;
  totalMemory: number;
  l2Bytes: number;
  multiprocessors: number;
  computeCapability: [number, number];
  maxSharedPerBlock: number;
  maxSharedPerSM: number;
  maxThreadsPerSM: number;
}

const BACKEND_CODE = { cpu: 0, cuda: 1 } as const;
const DEVICE_INFO_BYTES = 304;

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
  const handle = outPointer("pkv_runtime_create", (out) => native().pkv_runtime_create(BACKEND_CODE[backend], device, out));
  return new Runtime(handle, backend);
}

export class Runtime extends NativeObject implements Owner {
  readonly backend: Backend;
  readonly info: DeviceInfo;
  readonly #children: Set<Token>;

  constructor(handle: Pointer, backend: Backend) {
    const children = new Set<Token>();
    // The native destroy frees every child; their wrappers must refuse use from then on.
    super(handle, (h) => native().pkv_runtime_destroy(h), "runtime", undefined, () => {
      for (const child of children) NativeObject.retire(child);
      children.clear();
    });
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
    return outPointer("pkv_buffer_alloc", (out) => native().pkv_buffer_alloc(this.handle, MEMORY_KIND.get(kind)!, bytes, out));
  }

  createStream(): Stream {
    return new Stream(outPointer("pkv_stream_create", (out) => native().pkv_stream_create(this.handle, out)), this);
  }

  createEvent(): Event {
    return new Event(outPointer("pkv_event_create", (out) => native().pkv_event_create(this.handle, out)), this);
  }

  /** A paged KV cache whose pages live on this runtime's device. */
  createKVCache(options: KVCacheOptions): KVCache {
    return new KVCache(this, options);
  }

  /** A decode engine: plans each step's workqueue once and runs it for every layer. */
  createDecodeEngine(options: DecodeEngineOptions): DecodeEngine {
    const engine = new DecodeEngine(this, options);
    // An adaptive engine on a calibrated GPU uses the stored table (see calibrate below).
    if (engine.policy === "adaptive" && this.backend === "cuda")
      engine.setPolicyTable(loadPolicy(policyKey(this.info.name, engine)));
    return engine;
  }

  /**
   * Times both decode kernels over a grid of batch shapes on this GPU (well under a minute) and stores
   * the adaptive policy's table on disk, where engines of the same shape load it. CUDA only.
   */
  calibrate(shape: ModelShape, options: CalibrateOptions = {}): { table: PolicyTable; path: string } {
    const table = calibrate(this, shape, options);
    return { table, path: savePolicy(policyKey(this.info.name, shape), table) };
  }

  /** Records the asynchronous work `body` queues (e.g. a plan's upload and every layer's run) as a graph. */
  capture(body: () => void, stream?: Stream): Graph {
    if (typeof body !== "function") throw new InvalidArgumentError(Status.INVALID_ARGUMENT, "capture: body is not a function");
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
  const size = native().pkv_device_info_size();
  if (size !== DEVICE_INFO_BYTES) throw new Error(`pkv_device_info is ${size} bytes natively, ${DEVICE_INFO_BYTES} here`);
  const raw = new Uint8Array(DEVICE_INFO_BYTES);
  check(native().pkv_device_info_get(handle, raw), "pkv_device_info_get");
  const data = new DataView(raw.buffer);
  const i32 = (offset: number) => data.getInt32(offset, true);
  const nameEnd = raw.indexOf(0);
  return {
    name: new TextDecoder().decode(raw.subarray(0, nameEnd < 0 ? 256 : Math.min(nameEnd, 256))),
    totalMemory: Number(data.getBigInt64(256, true)),
    l2Bytes: Number(data.getBigInt64(264, true)),
    backend: i32(272) === 1 ? "cuda" : "cpu",
    device: i32(276),
    multiprocessors: i32(280),
    computeCapability: [i32(284), i32(288)],
    maxSharedPerBlock: i32(292),
    maxSharedPerSM: i32(296),
    maxThreadsPerSM: i32(300),
  };
}

