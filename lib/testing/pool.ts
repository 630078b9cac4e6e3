// A minimal KV cache for decode-engine tests, benchmarks and the GPU sweep: a native pool filled with
// random pages (shuffled page ids), block-table rows written through the pinned table's views, and the
// host copy of every page for the reference (pkv_reference_decode).
import { type Pointer, toArrayBuffer } from "bun:ffi";
import { check, outPointer } from "../ffi/call";
import { native } from "../ffi/loader";
import { type DType, encode, kvPageBytes, valueDtype } from "../dtype";
import { seeded } from "../random";
import { referenceDecode } from "../reference";
import type { Runtime } from "../runtime";
import { encodeConfig, type KVCacheConfig } from "../cache/config";

/** The cache configuration without swap: the test pool has none. */
export type PoolShape = Omit<KVCacheConfig, "swapPages">;

export interface TestSequence {
  readonly row: number;
  readonly length: number;
  readonly pages: Int32Array;
}

/** Deterministic PRNG (mulberry32) so failures reproduce from the seed. */
export const rng = seeded;

/** `n` random 16-bit values uniform in [-scale, scale], drawn from a 4096-entry table (fast for GiBs). */
export function randomHalves(dtype: DType, n: number, random: () => number, scale = 1): Uint16Array {
  const table = encode(
    dtype,
    Array.from({ length: 4096 }, () => (random() * 2 - 1) * scale),
  );
  const out = new Uint16Array(n);
  let word = 0;
  for (let i = 0; i < n; i++) {
    if ((i & 1) === 0) word = (random() * 4294967296) >>> 0;
    out[i] = table[(i & 1 ? word >>> 16 : word) & 4095]!;
  }
  return out;
}

export class TestPool {
  readonly poolHandle: Pointer;
  readonly shape: PoolShape;
  readonly table: Int32Array;
  readonly dirtyFrom: Int32Array;
  /** Host copy of each layer's pages, HND [page][kv_head][slot][d] values (written to the pool as they are, or quantized). */
  readonly k: Uint16Array[] = [];
  readonly v: Uint16Array[] = [];
  /** FP8 pools: each layer's pages as stored (codes and scales, read back from the pool), for the reference. */
  readonly storedK: Uint8Array[] = [];
  readonly storedV: Uint8Array[] = [];
  /** The 16-bit type of values, q and out. */
  readonly values: DType;
  readonly #shuffled: number[];
  readonly #freePages: number[];
  #nextRow = 0;

  constructor(rt: Runtime, shape: PoolShape, seed = 1, hostCopy = true, shuffle = true) {
    this.shape = shape;
    this.values = valueDtype(shape.dtype, shape.queryDtype);
    const s = shape;
    const config = encodeConfig({ ...s, swapPages: 0 });
    this.poolHandle = outPointer("pkv_kvpool_create", (out) => native().pkv_kvpool_create(rt.handle, config, out));
    const addresses = new BigUint64Array(2);
    check(
      native().pkv_kvpool_table_addresses(this.poolHandle, addresses.subarray(0, 1), addresses.subarray(1, 2)),
      "pkv_kvpool_table_addresses",
    );
    const entries = s.maxSequences * s.maxPagesPerSequence;
    this.table = new Int32Array(toArrayBuffer(Number(addresses[0]) as Pointer, 0, entries * 4));
    this.dirtyFrom = new Int32Array(toArrayBuffer(Number(addresses[1]) as Pointer, 0, s.maxSequences * 4));
    const random = rng(seed);
    // Shuffled page ids: consecutive tokens never sit in consecutive pages.
    this.#shuffled = Array.from({ length: s.numPages }, (_, i) => i);
    for (let i = s.numPages - 1; shuffle && i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [this.#shuffled[i], this.#shuffled[j]] = [this.#shuffled[j]!, this.#shuffled[i]!];
    }
    this.#freePages = [...this.#shuffled];
    const layerElems = s.numPages * s.numKvHeads * s.pageSize * s.headDim;
    for (let layer = 0; layer < s.numLayers; layer++) {
      if (hostCopy) {
        this.k.push(randomHalves(this.values, layerElems, random));
        this.v.push(randomHalves(this.values, layerElems, random));
        this.#upload(layer);
        if (s.dtype === "fp8_e4m3") this.#readStored(layer);
      } else {
        this.#fillRepeating(layer, random);
      }
    }
  }

  // Benchmarks: pools of GiBs filled from one random block (8 MiB of K and V) repeated; no host copy.
  #fillRepeating(layer: number, random: () => number): void {
    const { numPages, pageSize, numKvHeads: h, headDim: d } = this.shape;
    const n = Math.min(numPages * pageSize, Math.max(pageSize, Math.floor((4 << 20) / (h * d))));
    const k = randomHalves(this.values, n * h * d, random),
      v = randomHalves(this.values, n * h * d, random);
    const slots = new Int32Array(n);
    for (let first = 0; first < numPages * pageSize; first += n) {
      const count = Math.min(n, numPages * pageSize - first);
      for (let i = 0; i < count; i++) slots[i] = first + i;
      check(native().pkv_kvpool_write(this.poolHandle, layer, count, slots, k, v), "pkv_kvpool_write");
    }
  }

  // pkv_kvpool_write takes token-major [n][kv_head][d]; transpose the HND pages in slices.
  #upload(layer: number): void {
    const { numPages, pageSize, numKvHeads: h, headDim: d } = this.shape;
    const pagesPerWrite = Math.max(1, Math.floor(65536 / pageSize));
    for (let p0 = 0; p0 < numPages; p0 += pagesPerWrite) {
      const pages = Math.min(pagesPerWrite, numPages - p0),
        n = pages * pageSize;
      const slots = new Int32Array(n);
      const k = new Uint16Array(n * h * d),
        v = new Uint16Array(n * h * d);
      for (let p = 0; p < pages; p++)
        for (let head = 0; head < h; head++)
          for (let slot = 0; slot < pageSize; slot++) {
            const token = p * pageSize + slot;
            slots[token] = (p0 + p) * pageSize + slot;
            const src = (((p0 + p) * h + head) * pageSize + slot) * d,
              dst = (token * h + head) * d;
            k.set(this.k[layer]!.subarray(src, src + d), dst);
            v.set(this.v[layer]!.subarray(src, src + d), dst);
          }
      check(native().pkv_kvpool_write(this.poolHandle, layer, n, slots, k, v), "pkv_kvpool_write");
    }
  }

  // The FP8 pages of a layer as the pool stores them: every slot's codes and scales, laid out as pages.
  #readStored(layer: number): void {
    const { numPages, pageSize, numKvHeads: h, headDim: d } = this.shape;
    const pageBytes = kvPageBytes("fp8_e4m3", h, pageSize, d);
    const codeBytes = h * pageSize * d;
    const n = numPages * pageSize;
    const slots = Int32Array.from({ length: n }, (_, i) => i);
    const [kc, vc] = [new Uint8Array(n * h * d), new Uint8Array(n * h * d)];
    const [ks, vs] = [new Float32Array(n * h), new Float32Array(n * h)];
    check(native().pkv_kvpool_read_raw(this.poolHandle, layer, n, slots, kc, vc, ks, vs), "pkv_kvpool_read_raw");
    for (const [codes, scales, out] of [
      [kc, ks, this.storedK],
      [vc, vs, this.storedV],
    ] as const) {
      const pages = new Uint8Array(numPages * pageBytes);
      for (let slot = 0; slot < n; slot++) {
        const page = Math.floor(slot / pageSize),
          offset = slot % pageSize;
        for (let head = 0; head < h; head++) {
          const row = head * pageSize + offset,
            src = slot * h + head;
          pages.set(codes.subarray(src * d, src * d + d), page * pageBytes + row * d);
          new DataView(pages.buffer).setFloat32(page * pageBytes + codeBytes + row * 4, scales[src]!, true);
        }
      }
      out.push(pages);
    }
  }

  /** A sequence of `length` tokens on fresh (shuffled) pages, its block-table row marked dirty. */
  addSequence(length: number): TestSequence {
    const { pageSize, maxPagesPerSequence, maxSequences } = this.shape;
    const count = Math.ceil(length / pageSize);
    if (this.#nextRow >= maxSequences) throw new Error("test pool: no block-table row left");
    if (count > maxPagesPerSequence || count > this.#freePages.length) throw new Error("test pool: out of pages");
    const row = this.#nextRow++;
    const pages = Int32Array.from(this.#freePages.splice(0, count));
    this.table.set(pages, row * maxPagesPerSequence);
    this.dirtyFrom[row] = Math.min(this.dirtyFrom[row]!, 0);
    return { row, length, pages };
  }

  /** Releases every sequence (rows and pages are reused; the table is rewritten by addSequence). */
  reset(): void {
    this.#nextRow = 0;
    this.#freePages.length = 0;
    for (const page of this.#shuffled) this.#freePages.push(page);
  }

  describeBatch(sequences: readonly TestSequence[], rows: Int32Array, lengths: Int32Array): void {
    sequences.forEach((s, i) => {
      rows[i] = s.row;
      lengths[i] = s.length;
    });
  }

  /** pkv_reference_decode over the same pages: out [batch][hq][d] bits and lse (natural log). */
  reference(layer: number, sequences: readonly TestSequence[], numQoHeads: number, q: Uint16Array, smScale = 0) {
    const s = this.shape;
    const indptr = new Int32Array(sequences.length + 1);
    sequences.forEach((seq, i) => (indptr[i + 1] = indptr[i]! + seq.pages.length));
    const indices = new Int32Array(indptr[sequences.length]!);
    sequences.forEach((seq, i) => indices.set(seq.pages, indptr[i]!));
    const out = new Uint16Array(sequences.length * numQoHeads * s.headDim);
    const lse = new Float32Array(sequences.length * numQoHeads);
    referenceDecode({
      shape: {
        numQoHeads,
        numKvHeads: s.numKvHeads,
        headDim: s.headDim,
        pageSize: s.pageSize,
        dtype: s.dtype,
        queryDtype: this.values,
        smScale,
      },
      pageIndptr: indptr,
      pageIndices: indices,
      seqLens: Int32Array.from(sequences.map((seq) => seq.length)),
      kPages: s.dtype === "fp8_e4m3" ? this.storedK[layer]! : this.k[layer]!,
      vPages: s.dtype === "fp8_e4m3" ? this.storedV[layer]! : this.v[layer]!,
      numPages: s.numPages,
      q,
      out,
      lse,
    });
    return { out, lse };
  }

  dispose(): void {
    native().pkv_kvpool_destroy(this.poolHandle);
  }
}
