// Streams (ordered queues of GPU work) and events (points in a stream, for ordering and timing).
import type { Pointer } from "bun:ffi";
import { check, outPointer, outU64 } from "./ffi/call";
import { native } from "./ffi/loader";
import { NativeObject, type Owner } from "./lifetime";
import type { RuntimeContext } from "./types";
import { type Address, checkAddress } from "./interop/address";

export class Stream extends NativeObject {
  /** The caller's stream (wrap): disposing forgets it and never destroys it. */
  readonly wrapped: boolean;

  constructor(handle: Pointer, owner: Owner, wrapped = false) {
    super(handle, (h) => native().pkv_stream_destroy(h), "stream", owner);
    this.wrapped = wrapped;
  }

  /**
   * A stream over the caller's CUDA stream (a cudaStream_t as an integer, such as torch's
   * `torch.cuda.current_stream().cuda_stream`; 0 is the legacy default stream), so our work queues behind
   * the model's. It must be a stream of the runtime's device and outlive this Stream. On the CPU backend
   * work completes at once and the value is only kept.
   */
  static wrap(runtime: RuntimeContext, cudaStream: Address): Stream {
    const value = checkAddress("Stream.wrap", "cudaStream", cudaStream);
    const handle = outPointer("pkv_stream_wrap", (out) => native().pkv_stream_wrap(runtime.handle, value, out));
    return new Stream(handle, runtime, true);
  }

  /** The cudaStream_t as an integer (0 on the CPU backend), for launching a model's kernels on it. */
  get cudaStream(): number {
    return outU64("pkv_stream_native", (out) => native().pkv_stream_native(this.handle, out));
  }

  synchronize(): void {
    check(native().pkv_stream_synchronize(this.handle), "pkv_stream_synchronize");
  }
}

export class Event extends NativeObject {
  readonly #done = new Int32Array(1); // query()'s out-parameter, reused: polls allocate nothing
  constructor(handle: Pointer, owner: Owner) {
    super(handle, (h) => native().pkv_event_destroy(h), "event", owner);
  }
  /** Records the event on the stream (the runtime's own stream if none). */
  record(stream?: Stream): void {
    check(native().pkv_event_record(this.handle, stream?.handle ?? null), "pkv_event_record");
  }
  synchronize(): void {
    check(native().pkv_event_synchronize(this.handle), "pkv_event_synchronize");
  }
  /** True once the work queued before the last record() is complete (or none was recorded); never waits. */
  query(): boolean {
    check(native().pkv_event_query(this.handle, this.#done), "pkv_event_query");
    return this.#done[0] === 1;
  }
  /** Resolves once query() is true; rejects with the typed error if the GPU work failed. Polls between turns
   * of the event loop (setImmediate), so other callbacks run while the GPU works. */
  done(): Promise<void> {
    return new Promise((resolve, reject) => {
      const poll = () => {
        try {
          if (this.query()) resolve();
          else setImmediate(poll);
        } catch (error) {
          reject(error);
        }
      };
      poll();
    });
  }
  /** Milliseconds from `start` to this event (both recorded and complete). */
  elapsedSince(start: Event): number {
    const ms = new Float32Array(1);
    check(native().pkv_event_elapsed_ms(start.handle, this.handle, ms), "pkv_event_elapsed_ms");
    return ms[0]!;
  }
}
