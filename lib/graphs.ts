// CUDA graphs: record a step's queued work once, replay it with one launch.
import type { Pointer } from "bun:ffi";
import { check, outPointer } from "./ffi/call";
import { native } from "./ffi/loader";
import { NativeObject, type Owner } from "./lifetime";
import type { Stream } from "./streams";

export class Graph extends NativeObject {
  constructor(handle: Pointer, owner: Owner) {
    super(handle, (h) => native().pkv_graph_destroy(h), "graph", owner);
  }
  /** Queues the recorded work on the stream (the runtime's own if none). */
  launch(stream?: Stream): void {
    check(native().pkv_graph_launch(this.handle, stream?.handle ?? null), "pkv_graph_launch");
  }
}

/**
 * Records what `body` queues on the stream into a Graph instead of running it. `body` must queue
 * asynchronous work only (device-buffer runs, copies); a call that waits for the GPU fails the capture.
 */
export function capture(runtimeHandle: Pointer, owner: Owner, body: () => void, stream?: Stream): Graph {
  const s = stream?.handle ?? null;
  check(native().pkv_capture_begin(runtimeHandle, s), "pkv_capture_begin");
  try {
    body();
  } catch (error) {
    const discard = new BigUint64Array(1);
    if (native().pkv_capture_end(runtimeHandle, s, discard) === 0)
      native().pkv_graph_destroy(Number(discard[0]) as Pointer);
    throw error;
  }
  return new Graph(
    outPointer("pkv_capture_end", (out) => native().pkv_capture_end(runtimeHandle, s, out)),
    owner,
  );
}
