// Streams (ordered queues of GPU work) and events (points in a stream, for ordering and timing).
import type { Pointer } from "bun:ffi";
import { check } from "./ffi/call";
import { native } from "./ffi/loader";
import { NativeObject, type Owner } from "./lifetime";

export class Stream extends NativeObject {
  constructor(handle: Pointer, owner: Owner) {
    super(handle, (h) => native().pkv_stream_destroy(h), "stream", owner);
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
