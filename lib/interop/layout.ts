// Where a pool keeps its pages, for a model that writes or reads K and V in place: each layer's K and V
// addresses with the HND strides (pkv_kvpool_layout in the C header), and the slot -> (page, offset) split.
import type { Pointer } from "bun:ffi";
import { check } from "../ffi/call";
import { checkNativeSize, KVPOOL_LAYOUT } from "../ffi/layouts";
import { native } from "../ffi/loader";
import { InvalidArgumentError, Status } from "../errors";
import { checkIndex } from "../validate";

/**
 * One layer's pages. Element (page p, kv head h, slot s, dim i) of K is at
 * `k + p * pageBytes + h * headBytes + s * tokenBytes + i * elemBytes`; V likewise from `v`.
 */
export interface KVPoolLayout {
  /** Device address of the layer's K pages (host memory on the CPU backend). */
  k: number;
  v: number;
  pageBytes: number;
  headBytes: number;
  tokenBytes: number;
  numPages: number;
  pageSize: number;
  numKvHeads: number;
  headDim: number;
  elemBytes: number;
}

/** Where tokens live: slot i is page[i] * pageSize + offset[i]. */
export interface TokenPositions {
  pages: Int32Array;
  offsets: Int32Array;
  /** The slots themselves (what writeKV takes), for a model to upload and scatter its K and V with. */
  slots: Int32Array;
}

/** The layout of `layer` (checked against `numLayers`) of the pool behind `pool` (a native pool handle). */
export function readLayout(pool: Pointer, layer: number, numLayers: number): KVPoolLayout {
  checkIndex("layout", "layer", layer, numLayers);
  checkNativeSize(KVPOOL_LAYOUT, native().pkv_kvpool_layout_size());
  const bytes = KVPOOL_LAYOUT.alloc();
  check(native().pkv_kvpool_layout_get(pool, layer, bytes), "pkv_kvpool_layout_get");
  const { dtype: _, ...layout } = KVPOOL_LAYOUT.decode(bytes);
  return layout;
}

/** Splits slots into page ids and offsets (page sizes are powers of two). */
export function splitSlots(slots: Int32Array, pageSize: number): TokenPositions {
  if (!(slots instanceof Int32Array))
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, "positions: slots must be an Int32Array");
  const shift = Math.log2(pageSize);
  const pages = new Int32Array(slots.length),
    offsets = new Int32Array(slots.length);
  for (let i = 0; i < slots.length; i++) {
    pages[i] = slots[i]! >> shift;
    offsets[i] = slots[i]! & (pageSize - 1);
  }
  return { pages, offsets, slots };
}
