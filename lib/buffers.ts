// Device and pinned buffers. Pinned buffers give zero-copy typed-array views of native memory;
// the views are detached when the buffer is freed, so a stale view reads nothing instead of freed memory.
import { type Pointer, toArrayBuffer } from "bun:ffi";
import { check, outPointer } from "./ffi/call";
import { native } from "./ffi/loader";
import { InvalidArgumentError, OutOfRangeError, Status } from "./errors";
import { NativeObject, type Owner } from "./lifetime";
import { Stream } from "./streams";
import type { RuntimeContext } from "./types";
import { type Address, checkAddress } from "./interop/address";
import { checkCount, checkOptions, show } from "./validate";

/** Host memory the native side reads or writes during a call. */
export type HostArray = NodeJS.TypedArray;
export type MemoryKind = "device" | "pinned";
// A Map, not an object: a kind named "toString" must not find Object.prototype's.
export const MEMORY_KIND: ReadonlyMap<string, number> = new Map([
  ["device", 0],
  ["pinned", 1],
]);

function hostArray(what: string, value: unknown): ArrayBufferView {
  if (!ArrayBuffer.isView(value))
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `${what} is not a typed array or DataView`);
  return value;
}

/** The native handle of an optional stream argument (null: the runtime's own stream). */
export function streamHandle(method: string, stream: unknown): Pointer | null {
  if (stream === undefined || stream === null) return null;
  if (!(stream instanceof Stream))
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `${method}: stream ${show(stream)} is not a Stream`);
  return stream.handle;
}

function nativeBuffer(method: string, name: string, value: unknown): NativeBuffer {
  if (!(value instanceof NativeBuffer))
    throw new InvalidArgumentError(
      Status.INVALID_ARGUMENT,
      `${method}: ${name} ${show(value)} is not a buffer of a runtime`,
    );
  return value;
}

type TypedArrayClass<T> = {
  new (buffer: ArrayBuffer, byteOffset: number, length: number): T;
  BYTES_PER_ELEMENT: number;
};

export abstract class NativeBuffer extends NativeObject {
  abstract readonly kind: MemoryKind;
  readonly bytes: number;
  /** Device address (CUDA, device kind) or host address: for passing to native code, never to dereference. */
  readonly address: Pointer;

  protected constructor(handle: Pointer, bytes: number, what: string, owner: Owner, release?: () => void) {
    super(handle, (h) => native().pkv_buffer_free(h), what, owner, release);
    this.bytes = bytes;
    this.address = outPointer("pkv_buffer_address", (out) => native().pkv_buffer_address(handle, out));
  }

  /** Whether the memory is the caller's (wrap): disposing forgets it and frees nothing. */
  get wrapped(): boolean {
    const out = new Int32Array(1);
    check(native().pkv_buffer_is_wrapped(this.handle, out), "pkv_buffer_is_wrapped");
    return out[0] === 1;
  }

  /** Copies host data into the buffer at `offset` (bytes); complete on return. */
  write(src: HostArray, offset = 0): void {
    hostArray("write: source", src);
    checkCount("write", "offset", offset);
    check(native().pkv_buffer_write(this.handle, offset, src, src.byteLength), "pkv_buffer_write");
  }

  /** Copies `dst.byteLength` bytes from `offset` into host memory; waits for pending work first. */
  read(dst: HostArray, offset = 0): void {
    hostArray("read: destination", dst);
    checkCount("read", "offset", offset);
    check(native().pkv_buffer_read(this.handle, offset, dst, dst.byteLength), "pkv_buffer_read");
  }

  /** Asynchronous copy from another buffer of the same runtime. */
  copyFrom(src: NativeBuffer, options?: { bytes?: number; srcOffset?: number; dstOffset?: number; stream?: Stream }) {
    nativeBuffer("copyFrom", "source", src);
    const o = checkOptions("copyFrom", options);
    const srcOffset = checkCount("copyFrom", "srcOffset", o.srcOffset ?? 0);
    const dstOffset = checkCount("copyFrom", "dstOffset", o.dstOffset ?? 0);
    const fits = Math.max(0, Math.min(src.bytes - srcOffset, this.bytes - dstOffset));
    const bytes = checkCount("copyFrom", "bytes", o.bytes ?? fits);
    const stream = streamHandle("copyFrom", o.stream);
    check(native().pkv_buffer_copy(this.handle, dstOffset, src.handle, srcOffset, bytes, stream), "pkv_buffer_copy");
  }

  /** Sets `bytes` bytes from `offset` to `value` (0-255), asynchronously on the stream. */
  fill(value: number, options?: { offset?: number; bytes?: number; stream?: Stream }): void {
    checkCount("fill", "byte value", value, 0, 255);
    const o = checkOptions("fill", options);
    const offset = checkCount("fill", "offset", o.offset ?? 0);
    const bytes = checkCount("fill", "bytes", o.bytes ?? Math.max(0, this.bytes - offset));
    const stream = streamHandle("fill", o.stream);
    check(native().pkv_buffer_fill(this.handle, offset, value, bytes, stream), "pkv_buffer_fill");
  }
}

/** The handle of a buffer over the caller's memory (pkv_buffer_wrap). */
function wrapMemory(
  method: string,
  runtime: RuntimeContext,
  kind: MemoryKind,
  address: unknown,
  bytes: unknown,
): Pointer {
  const at = checkAddress(method, "address", address);
  const size = checkCount(method, "bytes", bytes, 1);
  return outPointer("pkv_buffer_wrap", (out) =>
    native().pkv_buffer_wrap(runtime.handle, MEMORY_KIND.get(kind)!, at, size, out),
  );
}

/** GPU memory (host memory on the CPU backend): no host views; use write/read/copyFrom. */
export class DeviceBuffer extends NativeBuffer {
  readonly kind = "device" as const;
  constructor(handle: Pointer, bytes: number, owner: Owner) {
    super(handle, bytes, "device buffer", owner);
  }

  /**
   * A buffer over device memory the caller owns (a framework's tensor: its data_ptr() and size), never
   * freed by us; on the CPU backend, host memory (such as `ptr()` of a typed array the caller keeps
   * alive). The address must be 16-byte aligned, and the memory must outlive the buffer.
   */
  static wrap(runtime: RuntimeContext, address: Address, bytes: number): DeviceBuffer {
    return new DeviceBuffer(wrapMemory("DeviceBuffer.wrap", runtime, "device", address, bytes), bytes, runtime);
  }
}

/** Page-locked host memory with zero-copy typed-array views. */
export class PinnedBuffer extends NativeBuffer {
  readonly kind = "pinned" as const;
  readonly #views: ArrayBuffer[];

  constructor(handle: Pointer, bytes: number, owner: Owner) {
    const views: ArrayBuffer[] = [];
    // Freeing the memory detaches every view: their typed arrays become empty instead of dangling.
    super(handle, bytes, "pinned buffer", owner, () => {
      for (const view of views) if (!view.detached) view.transfer(0);
      views.length = 0;
    });
    this.#views = views;
  }

  /** A buffer over page-locked host memory the caller owns (CUDA: registered or cudaHostAlloc'd), never freed by us. */
  static wrap(runtime: RuntimeContext, address: Address, bytes: number): PinnedBuffer {
    return new PinnedBuffer(wrapMemory("PinnedBuffer.wrap", runtime, "pinned", address, bytes), bytes, runtime);
  }

  /** A typed array over the buffer's memory (no copy). `length` in elements; default: to the end. */
  view<T>(Type: TypedArrayClass<T>, byteOffset = 0, length?: number): T {
    const size = (Type as { BYTES_PER_ELEMENT?: unknown } | null)?.BYTES_PER_ELEMENT;
    if (typeof Type !== "function" || typeof size !== "number" || !VIEW_TYPES.has(Type))
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `view: ${show(Type)} is not a typed array class`);
    checkCount("view", "byteOffset", byteOffset);
    if (length !== undefined) checkCount("view", "length", length);
    if (byteOffset % size !== 0)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `view: byteOffset ${byteOffset} is not a multiple of ${size}`,
      );
    const count = length ?? Math.floor((this.bytes - byteOffset) / size);
    if (count < 0 || byteOffset + count * size > this.bytes)
      throw new OutOfRangeError(
        Status.OUT_OF_RANGE,
        `view of ${count} x ${size} bytes at ${byteOffset} exceeds the buffer's ${this.bytes} bytes`,
      );
    this.handle; // throws if disposed
    if (count === 0) return new Type(new ArrayBuffer(0), 0, 0); // toArrayBuffer refuses an empty range
    const memory = toArrayBuffer(this.address, byteOffset, count * size);
    this.#views.push(memory);
    return new Type(memory, 0, count);
  }
}

const VIEW_TYPES = new Set<unknown>([
  Int8Array,
  Uint8Array,
  Uint8ClampedArray,
  Int16Array,
  Uint16Array,
  Int32Array,
  Uint32Array,
  Float16Array,
  Float32Array,
  Float64Array,
  BigInt64Array,
  BigUint64Array,
]);
