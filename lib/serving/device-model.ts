// The model port of the device path: a model whose work is queued on device buffers and a stream, as a
// model running on the GPU does it. Its inputs for a step are rows in device memory (token id, position
// and cache slot of each row's token: what embeddings, rotary positions and the cache append need), so a
// step captured as a CUDA graph replays with the next step's rows; it writes each new token's K and V into
// the cache's pages itself (at the row's slot, as a fused append epilogue would) and q into a buffer.
import type { NativeBuffer } from "../buffers";
import type { KVCache } from "../kvcache";
import type { Stream } from "../streams";

/** A step row: request id, position, token id (-1 where unknown), slot; int32 each (pkv_synthetic_row). */
export const STEP_ROW_INTS = 4;
export const STEP_ROW_BYTES = 4 * STEP_ROW_INTS;

/** Writes row `i` of a step's rows (an Int32Array over host memory, pinned or not). */
export function writeStepRow(
  rows: Int32Array,
  i: number,
  requestId: number,
  position: number,
  token: number,
  slot: number,
): void {
  const at = i * STEP_ROW_INTS;
  rows[at] = requestId;
  rows[at + 1] = position;
  rows[at + 2] = token;
  rows[at + 3] = slot;
}

/** What one queued call of a device model works on. */
export interface DeviceStep {
  /** Rows in the step. */
  readonly batch: number;
  /** `batch` step rows from byte 0, in device memory (host memory on the CPU backend). */
  readonly rows: NativeBuffer;
  /** The cache whose pages receive each row's K and V, at the row's slot. */
  readonly cache: KVCache;
  /** Where the work is queued; the runtime's own stream when undefined. */
  readonly stream?: Stream;
}

/** Sizes a device runner allocates its buffers for. */
export interface DeviceModelShape {
  readonly numLayers: number;
  readonly numQoHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
}

/**
 * A model on the device. Every method only queues work (nothing waits for the GPU), so that a whole decode
 * step can be captured once and replayed; buffers are the runner's, allocated once and reused.
 */
export interface DeviceStepModel {
  readonly shape: DeviceModelShape;
  /**
   * One layer of a decode step: q of each row's new token into `q` ([batch][Hq][d]) and its K and V into
   * the cache at the row's slot. `previous` is the previous layer's attention output (null for layer 0).
   */
  forward(step: DeviceStep, layer: number, previous: NativeBuffer | null, q: NativeBuffer): void;
  /** Prefill: K and V of every row's token (context tokens, one row each) in every layer, into the cache. */
  prefill(step: DeviceStep): void;
  /** The token of each row (int32 [batch] into `tokens`) from the last layer's attention output `out`. */
  sample(step: DeviceStep, out: NativeBuffer, tokens: NativeBuffer): void;
  /** Optional: token ids are below this. */
  readonly vocab?: number;
  /** Optional: the most context tokens a request may reach. */
  readonly maxContext?: number;
}
