// Shared by the CPU and GPU interop tests: a multi-layer random paged batch in memory "the caller" owns,
// a KVPool wrapped over it, plans from the caller's page table, and the check of every layer's output
// against pkv_reference_decode.
import { ptr } from "bun:ffi";
import { decode, type DType } from "../../lib/dtype.ts";
import { KVPool } from "../../lib/interop/kvpool.ts";
import { referenceDecode } from "../../lib/reference.ts";
import type { Runtime } from "../../lib/runtime.ts";
import { type PagedBatch, randomPagedBatch } from "./attention.ts";

/** Memory of the caller: where it is, and how to fill it. */
export interface CallerMemory {
  address: number;
  write(data: Uint16Array): void;
}

/** Host memory standing in for device memory on the CPU backend: a 16-byte aligned window of a Uint8Array. */
export function hostMemory(bytes: number, keep: unknown[]): CallerMemory {
  const backing = new Uint8Array(bytes + 16 + 1024); // over 1000 bytes: bun:ffi's ptr() stays put
  keep.push(backing);
  const skip = (16 - (ptr(backing) % 16)) % 16;
  const window = backing.subarray(skip, skip + bytes);
  return {
    address: ptr(backing) + skip,
    write: (data) => window.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)),
  };
}

/** Device memory made by "another path": our own allocations, handed over by address only. */
export function deviceMemory(rt: Runtime, bytes: number): CallerMemory {
  const buffer = rt.allocDevice(bytes);
  return { address: buffer.address, write: (data) => buffer.write(data) };
}

export interface LayeredBatch {
  batch: PagedBatch; // the page table and layer 0's pages
  layers: { k: Uint16Array; v: Uint16Array }[];
  /** FlashInfer's last_page_len of each request. */
  lastPageLen: Int32Array;
}

export interface BatchShape {
  numQoHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  dtype: DType;
}

/** A random batch over shuffled pages, with different K and V in every layer. */
export function layeredBatch(shape: BatchShape, seqLens: number[], numLayers: number, seed: number): LayeredBatch {
  const batch = randomPagedBatch({ ...shape, seqLens, seed, sparePages: 3 });
  const layers = Array.from({ length: numLayers }, (_, l) => {
    if (l === 0) return { k: batch.kPages, v: batch.vPages };
    const other = randomPagedBatch({ ...shape, seqLens, seed: seed * 31 + l, sparePages: 3 });
    return { k: other.kPages, v: other.vPages };
  });
  const lastPageLen = Int32Array.from(seqLens, (len) => len - (Math.ceil(len / shape.pageSize) - 1) * shape.pageSize);
  return { batch, layers, lastPageLen };
}

/** Wraps a pool over caller memory holding every layer of `lb`. */
export function wrapPool(rt: Runtime, lb: LayeredBatch, memory: (bytes: number) => CallerMemory): KVPool {
  const { batch } = lb;
  const layerBytes = batch.numPages * batch.numKvHeads * batch.pageSize * batch.headDim * 2;
  const k: number[] = [],
    v: number[] = [];
  for (const layer of lb.layers) {
    const km = memory(layerBytes),
      vm = memory(layerBytes);
    km.write(layer.k);
    vm.write(layer.v);
    k.push(km.address);
    v.push(vm.address);
  }
  const { numKvHeads, headDim, pageSize, dtype, numPages } = batch;
  return KVPool.wrap(rt, { numLayers: lb.layers.length, numPages, pageSize, numKvHeads, headDim, dtype }, { k, v });
}

/** ||out - ref|| / ||ref|| of one layer against the reference. */
export function layerError(lb: LayeredBatch, layer: number, out: Uint16Array): number {
  const { batch } = lb;
  const ref = new Uint16Array(out.length);
  referenceDecode({
    shape: batch,
    pageIndptr: batch.pageIndptr,
    pageIndices: batch.pageIndices,
    seqLens: batch.seqLens,
    kPages: lb.layers[layer]!.k,
    vPages: lb.layers[layer]!.v,
    numPages: batch.numPages,
    q: batch.q,
    out: ref,
  });
  const a = decode(batch.dtype, out),
    b = decode(batch.dtype, ref);
  let diff = 0,
    norm = 0;
  for (let i = 0; i < a.length; i++) {
    diff += (a[i]! - b[i]!) ** 2;
    norm += b[i]! ** 2;
  }
  return Number.isNaN(diff) ? Number.POSITIVE_INFINITY : Math.sqrt(diff / norm);
}

/** The block-table form of the batch's page table: one row of `stride` columns per request. */
export function blockTableOf(lb: LayeredBatch, stride: number): Int32Array {
  const { pageIndptr, pageIndices, seqLens } = lb.batch;
  const table = new Int32Array(seqLens.length * stride).fill(-1); // past each row's pages: never read
  for (let b = 0; b < seqLens.length; b++)
    table.set(pageIndices.subarray(pageIndptr[b]!, pageIndptr[b + 1]!), b * stride);
  return table;
}
