// Interop on the CPU backend, where "device" memory is host memory: buffers and streams the caller owns,
// the pool layout a model writes through, memory sizing, and plans from the caller's page table over a
// pool of caller memory, checked against pkv_reference_decode.
import { ptr, toArrayBuffer } from "bun:ffi";
import { describe, expect, test } from "bun:test";
import { totalmem } from "node:os";
import {
  BadStateError,
  DeviceBuffer,
  InvalidArgumentError,
  KVPool,
  NullPointerError,
  OutOfMemoryError,
  OutOfRangeError,
  openRuntime,
  pageBytes,
  pagesFor,
  PinnedBuffer,
  Stream,
  swapPagesFor,
} from "../lib/index.ts";
import { PLAN_INFO } from "../lib/ffi/layouts.ts";
import { native } from "../lib/ffi/loader.ts";
import { blockTableOf, hostMemory, layerError, layeredBatch, wrapPool } from "./support/interop.ts";

const SHAPE = { numQoHeads: 8, numKvHeads: 2, headDim: 64, pageSize: 16, dtype: "f16" as const };

/** A 16-byte aligned window of a Uint8Array the test owns, and its address. */
function ownedBytes(bytes: number, keep: unknown[]): { view: Uint8Array; address: number } {
  const backing = new Uint8Array(bytes + 16 + 1024);
  keep.push(backing);
  const skip = (16 - (ptr(backing) % 16)) % 16;
  return { view: backing.subarray(skip, skip + bytes), address: ptr(backing) + skip };
}

describe("caller-owned buffers", () => {
  test("a wrapped Uint8Array is the buffer's memory both ways, and disposing frees nothing", () => {
    using rt = openRuntime({ backend: "cpu" });
    const keep: unknown[] = [];
    const { view, address } = ownedBytes(4096, keep);
    const buf = DeviceBuffer.wrap(rt, address, 4096);
    expect(buf.wrapped).toBe(true);
    expect(Number(buf.address)).toBe(address);
    buf.write(Uint8Array.from([1, 2, 3]), 100);
    expect(Array.from(view.subarray(100, 103))).toEqual([1, 2, 3]);
    view[7] = 42;
    const back = new Uint8Array(8);
    buf.read(back);
    expect(back[7]).toBe(42);
    buf.fill(9, { offset: 200, bytes: 4 });
    expect(Array.from(view.subarray(199, 205))).toEqual([0, 9, 9, 9, 9, 0]);
    using own = rt.allocDevice(64);
    expect(own.wrapped).toBe(false);
    own.write(Uint8Array.from({ length: 64 }, (_, i) => i));
    buf.copyFrom(own, { bytes: 64, dstOffset: 1024 });
    expect(view[1024 + 63]).toBe(63);
    buf.dispose();
    expect(() => buf.read(back)).toThrow(BadStateError);
    view[0] = 5; // still the test's memory, untouched by the dispose
    expect(view[0]).toBe(5);
  });

  test("wrapping our own allocation by address: the wrapper's dispose leaves the allocation alive", () => {
    using rt = openRuntime({ backend: "cpu" });
    using own = rt.allocPinned(256);
    own.view(Uint8Array).fill(7);
    const alias = PinnedBuffer.wrap(rt, own.address, 256);
    expect(alias.view(Uint8Array)[255]).toBe(7);
    alias.view(Uint8Array)[0] = 1;
    alias.dispose();
    expect(own.view(Uint8Array)[0]).toBe(1);
  });

  test("bad addresses and sizes are refused with typed errors", () => {
    using rt = openRuntime({ backend: "cpu" });
    const keep: unknown[] = [];
    const { address } = ownedBytes(64, keep);
    expect(() => DeviceBuffer.wrap(rt, 0, 64)).toThrow(NullPointerError);
    expect(() => DeviceBuffer.wrap(rt, address + 8, 32)).toThrow("16-byte aligned");
    expect(() => DeviceBuffer.wrap(rt, address, 0)).toThrow(InvalidArgumentError);
    expect(() => DeviceBuffer.wrap(rt, 2n ** 64n - 16n, 32)).toThrow("past the end of the address space");
    expect(() => DeviceBuffer.wrap(rt, 2n ** 64n, 32)).toThrow(InvalidArgumentError);
    expect(() => DeviceBuffer.wrap(rt, -16, 32)).toThrow(InvalidArgumentError);
    expect(() => DeviceBuffer.wrap(rt, 16.5, 32)).toThrow(InvalidArgumentError);
    expect(() => DeviceBuffer.wrap(rt, address, 2 ** 53)).toThrow(InvalidArgumentError);
    // The raw ABI: a range that wraps the address space, and a kind that is neither device nor pinned.
    const out = new BigUint64Array(1);
    expect(native().pkv_buffer_wrap(rt.handle, 0, 2n ** 63n, 2n ** 63n, out)).not.toBe(0);
    expect(native().pkv_buffer_wrap(rt.handle, 2, BigInt(address), 64n, out)).not.toBe(0);
    expect(String(native().pkv_last_error())).toContain("pkv_buffer_wrap: kind 2");
  });
});

describe("caller-owned streams", () => {
  test("a wrapped stream keeps the caller's value, runs work in order, and is never destroyed", () => {
    using rt = openRuntime({ backend: "cpu" });
    const stream = Stream.wrap(rt, 0x1230n);
    expect(stream.wrapped).toBe(true);
    expect(stream.cudaStream).toBe(0x1230);
    using own = rt.createStream();
    expect(own.wrapped).toBe(false);
    expect(own.cudaStream).toBe(0); // no CUDA stream on the CPU backend
    using a = rt.allocDevice(32);
    using b = rt.allocDevice(32);
    a.write(Uint8Array.from({ length: 32 }, (_, i) => i + 1));
    b.copyFrom(a, { stream });
    stream.synchronize();
    const back = new Uint8Array(32);
    b.read(back);
    expect(back[31]).toBe(32);
    stream.dispose();
    expect(() => stream.synchronize()).toThrow(BadStateError);
    expect(() => Stream.wrap(rt, -1)).toThrow(InvalidArgumentError);
  });
});

describe("memory sizing", () => {
  test("memory info: physical and available host memory on the CPU backend", () => {
    using rt = openRuntime({ backend: "cpu" });
    const info = rt.memoryInfo();
    expect(info.totalBytes).toBe(totalmem());
    expect(info.freeBytes).toBeGreaterThan(0);
    expect(info.freeBytes).toBeLessThanOrEqual(info.totalBytes);
  });

  test("bytes per page cover every layer's K and V", () => {
    expect(pageBytes({ numLayers: 32, pageSize: 16, numKvHeads: 8, headDim: 128, dtype: "f16" })).toBe(
      32 * 2 * 8 * 16 * 128 * 2,
    );
    expect(pageBytes({ numLayers: 1, pageSize: 1, numKvHeads: 1, headDim: 64, dtype: "bf16" })).toBe(256);
    expect(() => pageBytes({ numLayers: 1, pageSize: 3, numKvHeads: 1, headDim: 64, dtype: "f16" })).toThrow(
      "page_size 3",
    );
  });

  test("a pool from a fraction of free memory, swap from bytes", () => {
    using rt = openRuntime({ backend: "cpu" });
    const shape = { numLayers: 2, pageSize: 16, numKvHeads: 2, headDim: 64, dtype: "f16" as const };
    const page = pageBytes(shape); // 16 KiB
    const table = 4 * 8 * 4; // maxSequences x maxPagesPerSequence entries of 4 bytes
    const sized = { ...shape, maxSequences: 4, maxPagesPerSequence: 8 };
    expect(pagesFor(rt, sized, { memoryFraction: 0.5, freeBytes: 100 * page })).toBe(
      Math.floor((50 * page - table) / page),
    );
    expect(pagesFor(rt, sized, { memoryFraction: 1, freeBytes: 3 * page + table })).toBe(3);
    expect(() => pagesFor(rt, sized, { memoryFraction: 1, freeBytes: page })).toThrow(OutOfMemoryError);
    for (const bad of [0, -0.1, 1.5, Number.NaN])
      expect(() => pagesFor(rt, sized, { memoryFraction: bad })).toThrow(InvalidArgumentError);
    expect(swapPagesFor(shape, 10 * page + 1)).toBe(10);
    // A tiny fraction of this machine's free memory: a few pages, whatever the machine.
    const fraction = (64 * page) / rt.memoryInfo().freeBytes;
    using cache = rt.createKVCache({ ...sized, memoryFraction: fraction, swapBytes: 5 * page });
    expect(cache.config.numPages).toBeGreaterThan(32);
    expect(cache.config.numPages).toBeLessThan(100);
    expect(cache.config.swapPages).toBe(5);
    expect(() => rt.createKVCache({ ...shape, numPages: 4, memoryFraction: 0.1 })).toThrow("not both");
    expect(() => rt.createKVCache({ ...shape, numPages: 4, swapPages: 1, swapBytes: page })).toThrow("not both");
    expect(() => rt.createKVCache({ ...shape })).toThrow("numPages or memoryFraction");
  });
});

describe("writing the cache in place", () => {
  test("layout and positions: K and V written at the computed addresses read back through readKV", () => {
    using rt = openRuntime({ backend: "cpu" });
    using cache = rt.createKVCache({
      numLayers: 2,
      numPages: 8,
      pageSize: 4,
      numKvHeads: 2,
      headDim: 64,
      dtype: "f16",
    });
    const seq = cache.createSequence();
    const slots = cache.append(seq, 7);
    const where = cache.positions(seq);
    expect(Array.from(where.slots)).toEqual(Array.from(slots));
    for (let i = 0; i < 7; i++) expect(where.pages[i]! * 4 + where.offsets[i]!).toBe(slots[i]!);
    expect(Array.from(cache.positions(seq, 5).slots)).toEqual(Array.from(slots.subarray(5)));
    expect(() => cache.positions(seq, 3, 5)).toThrow(InvalidArgumentError);
    const layout = cache.layout(1);
    expect(layout).toMatchObject({ tokenBytes: 128, headBytes: 512, pageBytes: 1024, numPages: 8, pageSize: 4 });
    const [k, v] = [new BigUint64Array(1), new BigUint64Array(1)];
    native().pkv_kvpool_layer_addresses(cache.poolHandle, 1, k, v);
    expect([layout.k, layout.v]).toEqual([Number(k[0]), Number(v[0])]);
    // The "model" writes token t, head h, dim i = t * 1000 + h * 100 + i straight into layer 1's pages.
    const kPages = new Uint16Array(toArrayBuffer(layout.k as never, 0, layout.pageBytes * layout.numPages));
    const vPages = new Uint16Array(toArrayBuffer(layout.v as never, 0, layout.pageBytes * layout.numPages));
    for (let t = 0; t < 7; t++)
      for (let h = 0; h < 2; h++)
        for (let i = 0; i < 64; i++) {
          const at =
            (where.pages[t]! * layout.pageBytes + h * layout.headBytes + where.offsets[t]! * layout.tokenBytes) / 2 + i;
          kPages[at] = t * 1000 + h * 100 + i;
          vPages[at] = 60000 - (t * 1000 + h * 100 + i);
        }
    const back = cache.readKV(1, seq);
    for (let t = 0; t < 7; t++)
      for (let h = 0; h < 2; h++)
        for (let i = 0; i < 64; i++) {
          expect(back.k[(t * 2 + h) * 64 + i]).toBe(t * 1000 + h * 100 + i);
          expect(back.v[(t * 2 + h) * 64 + i]).toBe(60000 - (t * 1000 + h * 100 + i));
        }
    expect(() => cache.layout(2)).toThrow(OutOfRangeError);
    expect(() => cache.layout(0.5)).toThrow(InvalidArgumentError);
    // The native check behind it, for a caller of the raw ABI.
    expect(native().pkv_kvpool_layout_get(cache.poolHandle, 2, new Uint8Array(64))).toBe(8);
  });
});

describe("bring your own page table", () => {
  const LENS = [1, 16, 17, 40, 100, 3];

  test("planPaged over a pool of caller memory equals the reference in every layer (FlashInfer and block-table forms)", () => {
    using rt = openRuntime({ backend: "cpu" });
    const keep: unknown[] = [];
    const lb = layeredBatch(SHAPE, LENS, 3, 11);
    using pool = wrapPool(rt, lb, (bytes) => hostMemory(bytes, keep));
    using engine = rt.createDecodeEngine({ cache: pool, numQoHeads: SHAPE.numQoHeads, maxBatch: 8 });
    const { pageIndptr: indptr, pageIndices: indices } = lb.batch;
    for (const policy of ["baseline", "persistent"] as const) {
      const plan = engine.planPaged(pool, { indptr, indices, lastPageLen: lb.lastPageLen }, { policy });
      expect(plan.batch).toBe(LENS.length);
      expect(plan.totalTokens).toBe(LENS.reduce((a, b) => a + b, 0));
      for (let layer = 0; layer < 3; layer++) {
        const out = new Uint16Array(lb.batch.q.length).fill(0x7fff);
        engine.run(plan, layer, lb.batch.q, out);
        expect(layerError(lb, layer, out)).toBeLessThan(2e-3);
      }
    }
    const seqLens = lb.batch.seqLens;
    const plan = engine.planPaged(pool, { blockTable: blockTableOf(lb, 9), stride: 9, seqLens });
    const out = new Uint16Array(lb.batch.q.length);
    engine.run(plan, 2, lb.batch.q, out);
    expect(layerError(lb, 2, out)).toBeLessThan(2e-3);
  });

  test("a changed page table is planned exactly: other pages, other order, fewer requests", () => {
    using rt = openRuntime({ backend: "cpu" });
    const keep: unknown[] = [];
    const lb = layeredBatch(SHAPE, LENS, 2, 5);
    using pool = wrapPool(rt, lb, (bytes) => hostMemory(bytes, keep));
    using engine = rt.createDecodeEngine({ cache: pool, numQoHeads: SHAPE.numQoHeads, maxBatch: 8 });
    const { pageIndptr: indptr, pageIndices: indices } = lb.batch;
    engine.planPaged(pool, { indptr, indices, lastPageLen: lb.lastPageLen });
    // The requests reversed: every row of the table now holds other pages.
    const order = [...LENS.keys()].reverse();
    const reversed = layeredBatch(
      SHAPE,
      order.map((b) => LENS[b]!),
      2,
      5,
    );
    const rIndptr = new Int32Array(LENS.length + 1);
    const rIndices: number[] = [];
    order.forEach((b, i) => {
      rIndices.push(...indices.subarray(indptr[b]!, indptr[b + 1]!));
      rIndptr[i + 1] = rIndices.length;
    });
    const view = {
      ...reversed,
      layers: lb.layers,
      batch: {
        ...lb.batch,
        pageIndptr: rIndptr,
        pageIndices: Int32Array.from(rIndices),
        seqLens: reversed.batch.seqLens,
        q: reversed.batch.q,
      },
    };
    const plan = engine.planPaged(pool, {
      indptr: rIndptr,
      indices: Int32Array.from(rIndices),
      lastPageLen: reversed.lastPageLen,
    });
    for (let layer = 0; layer < 2; layer++) {
      const out = new Uint16Array(view.batch.q.length);
      engine.run(plan, layer, view.batch.q, out);
      expect(layerError(view, layer, out)).toBeLessThan(2e-3);
    }
    // The first two requests alone, as planned at first.
    const two = engine.planPaged(pool, {
      indptr: indptr.subarray(0, 3),
      indices,
      lastPageLen: lb.lastPageLen.subarray(0, 2),
    });
    const q2 = lb.batch.q.subarray(0, 2 * SHAPE.numQoHeads * SHAPE.headDim);
    const out = new Uint16Array(q2.length);
    engine.run(two, 1, q2, out);
    const sub = {
      ...lb,
      batch: { ...lb.batch, pageIndptr: indptr.subarray(0, 3), seqLens: lb.batch.seqLens.subarray(0, 2), q: q2 },
    };
    expect(layerError(sub, 1, out)).toBeLessThan(2e-3);
  });

  test("bad page tables are refused with typed errors, and the current plan still runs as before", () => {
    using rt = openRuntime({ backend: "cpu" });
    const keep: unknown[] = [];
    const lb = layeredBatch(SHAPE, LENS, 1, 3);
    using pool = wrapPool(rt, lb, (bytes) => hostMemory(bytes, keep));
    using engine = rt.createDecodeEngine({ cache: pool, numQoHeads: SHAPE.numQoHeads, maxBatch: 8 });
    const { pageIndptr: indptr, pageIndices: indices } = lb.batch;
    const lastPageLen = lb.lastPageLen;
    const plan = engine.planPaged(pool, { indptr, indices, lastPageLen });
    const first = new Uint16Array(lb.batch.q.length);
    engine.run(plan, 0, lb.batch.q, first);
    const numPages = lb.batch.numPages;
    const withIndex = (i: number, page: number) => Int32Array.from(indices, (p, j) => (j === i ? page : p));
    const withLast = (b: number, len: number) => Int32Array.from(lastPageLen, (x, j) => (j === b ? len : x));
    const bad: [() => unknown, new (...a: never[]) => Error, string][] = [
      [
        () => engine.planPaged(pool, { indptr, indices: withIndex(5, numPages), lastPageLen }),
        OutOfRangeError,
        `page ${numPages}`,
      ],
      [() => engine.planPaged(pool, { indptr, indices: withIndex(0, -1), lastPageLen }), OutOfRangeError, "page -1"],
      [
        () => engine.planPaged(pool, { indptr, indices, lastPageLen: withLast(2, 0) }),
        InvalidArgumentError,
        "last_page_len[2] = 0",
      ],
      [
        () => engine.planPaged(pool, { indptr, indices, lastPageLen: withLast(1, 17) }),
        InvalidArgumentError,
        "last_page_len[1] = 17",
      ],
      [
        () =>
          engine.planPaged(pool, {
            indptr: Int32Array.from(indptr, (x, j) => (j === 0 ? 1 : x)),
            indices,
            lastPageLen,
          }),
        InvalidArgumentError,
        "indptr[0] = 1",
      ],
      [
        () =>
          engine.planPaged(pool, {
            indptr: Int32Array.from(indptr, (x, j) => (j === 3 ? indptr[2]! : x)),
            indices,
            lastPageLen,
          }),
        InvalidArgumentError,
        "at least one",
      ],
      [
        () => engine.planPaged(pool, { indptr, indices: indices.subarray(0, 3), lastPageLen }),
        InvalidArgumentError,
        "indices",
      ],
      [
        () => engine.planPaged(pool, { indptr: indptr.subarray(0, 3), indices, lastPageLen }),
        InvalidArgumentError,
        "indptr",
      ],
      [
        () => engine.planPaged(pool, { indptr, indices, lastPageLen: new Int32Array(0) }),
        InvalidArgumentError,
        "lastPageLen",
      ],
      [
        () =>
          engine.planPaged(pool, {
            blockTable: blockTableOf(lb, 7),
            stride: 7,
            seqLens: Int32Array.from(lb.batch.seqLens, (x, j) => (j === 4 ? 113 : x)),
          }),
        InvalidArgumentError,
        "seq_lens[4] = 113",
      ],
      [
        () =>
          engine.planPaged(pool, {
            blockTable: blockTableOf(lb, 7).fill(numPages + 3, 0, 1),
            stride: 7,
            seqLens: lb.batch.seqLens,
          }),
        OutOfRangeError,
        "block_table",
      ],
      [
        () => engine.planPaged(pool, { blockTable: blockTableOf(lb, 7), stride: 0, seqLens: lb.batch.seqLens }),
        InvalidArgumentError,
        "stride",
      ],
      [() => engine.planPaged(pool, { rows: [] } as never), InvalidArgumentError, "must be"],
      [
        () => engine.planPaged(pool, { indptr, indices, lastPageLen }, { policy: "fast" as never }),
        InvalidArgumentError,
        "policy",
      ],
    ];
    for (const [call, type, text] of bad) {
      expect(call).toThrow(type);
      expect(call).toThrow(text);
    }
    const again = new Uint16Array(first.length);
    engine.run(plan, 0, lb.batch.q, again);
    expect(Buffer.from(again.buffer).equals(Buffer.from(first.buffer))).toBe(true);
    // A cache's own pool: its table is the cache's, so the caller's arrays may not overwrite it.
    using cache = rt.createKVCache({
      numLayers: 1,
      numPages: 64,
      pageSize: 16,
      numKvHeads: 2,
      headDim: 64,
      dtype: "f16",
    });
    expect(() => engine.planPaged(cache as never, { indptr, indices, lastPageLen })).toThrow("not a KVPool");
    const info = PLAN_INFO.alloc();
    expect(
      native().pkv_decode_plan_paged(engine.handle, cache.poolHandle, 1, indptr, indices, lastPageLen, -1, info),
    ).toBe(13);
    expect(String(native().pkv_last_error())).toContain(
      "pkv_decode_plan_paged: the pool's block table belongs to its cache",
    );
  });

  test("a plan refused by the planner behind it names the entry point called and leaves the table as it was", () => {
    using rt = openRuntime({ backend: "cpu" });
    const keep: unknown[] = [];
    const lb = layeredBatch(SHAPE, LENS, 1, 8);
    using pool = wrapPool(rt, lb, (bytes) => hostMemory(bytes, keep));
    using engine = rt.createDecodeEngine({ cache: pool, numQoHeads: 8, maxBatch: 2 });
    const [table, dirty] = [new BigUint64Array(1), new BigUint64Array(1)];
    native().pkv_kvpool_table_addresses(pool.poolHandle, table, dirty);
    const rows = new Int32Array(toArrayBuffer(Number(table[0]) as never, 0, 256 * 4));
    const marks = new Int32Array(toArrayBuffer(Number(dirty[0]) as never, 0, 8 * 4));
    const [rowsBefore, marksBefore] = [rows.slice(), marks.slice()];
    const { pageIndptr: indptr, pageIndices: indices } = lb.batch;
    // Six requests fit the pool's rows but not the engine's max_batch of 2: pkv_decode_plan refuses them.
    const status = native().pkv_decode_plan_paged(
      engine.handle,
      pool.poolHandle,
      6,
      indptr,
      indices,
      lb.lastPageLen,
      -1,
      PLAN_INFO.alloc(),
    );
    expect(status).toBe(1);
    expect(String(native().pkv_last_error())).toBe(
      "pkv_decode_plan_paged: batch 6 is not in 1..2 (the engine's max_batch)",
    );
    expect(rows).toEqual(rowsBefore);
    expect(marks).toEqual(marksBefore);
  });

  test("a request longer than the pool's table width, or more requests than its rows, is refused", () => {
    using rt = openRuntime({ backend: "cpu" });
    const keep: unknown[] = [];
    const lb = layeredBatch(SHAPE, [40, 8], 1, 9);
    const { numKvHeads, headDim, pageSize, dtype, numPages } = lb.batch;
    const layerBytes = numPages * numKvHeads * pageSize * headDim * 2;
    const k = hostMemory(layerBytes, keep),
      v = hostMemory(layerBytes, keep);
    const options = {
      numLayers: 1,
      numPages,
      pageSize,
      numKvHeads,
      headDim,
      dtype,
      maxSequences: 1,
      maxPagesPerSequence: 2,
    };
    using pool = KVPool.wrap(rt, options, { k: [k.address], v: [v.address] });
    using engine = rt.createDecodeEngine({ cache: pool, numQoHeads: 8 });
    const { pageIndptr: indptr, pageIndices: indices } = lb.batch;
    expect(() => engine.planPaged(pool, { indptr, indices, lastPageLen: lb.lastPageLen })).toThrow("max_sequences");
    expect(() =>
      engine.planPaged(pool, { indptr: indptr.subarray(0, 2), indices, lastPageLen: lb.lastPageLen.subarray(0, 1) }),
    ).toThrow("more than the pool's max_pages_per_sequence 2");
  });

  test("KVPool.wrap checks the caller's memory: counts, sizes, overlaps; disposing it frees nothing", () => {
    using rt = openRuntime({ backend: "cpu" });
    const keep: unknown[] = [];
    const options = { numLayers: 2, numPages: 4, pageSize: 16, numKvHeads: 2, headDim: 64, dtype: "f16" as const };
    const layerBytes = 4 * 2 * 16 * 64 * 2;
    const block = hostMemory(4 * layerBytes, keep);
    const at = (i: number) => block.address + i * layerBytes;
    expect(() => KVPool.wrap(rt, options, { k: [at(0)], v: [at(1), at(2)] })).toThrow("one per layer");
    expect(() => KVPool.wrap(rt, options, { k: [at(0), at(1)], v: [at(2), at(2)] })).toThrow("overlap");
    expect(() => KVPool.wrap(rt, options, { k: [at(0), at(1)], v: [at(2), at(3) - 16] })).toThrow("overlap");
    expect(() => KVPool.wrap(rt, options, { k: [at(0), at(1) + 8], v: [at(2), at(3)] })).toThrow("16-byte aligned");
    expect(() => KVPool.wrap(rt, options, { k: [0, at(1)], v: [at(2), at(3)] })).toThrow(NullPointerError);
    expect(() =>
      KVPool.wrap(rt, { ...options, swapPages: 1 } as never, { k: [at(0), at(1)], v: [at(2), at(3)] }),
    ).toThrow("no swap");
    using small = rt.allocDevice(layerBytes - 16);
    expect(() => KVPool.wrap(rt, options, { k: [small, at(1)], v: [at(2), at(3)] })).toThrow(OutOfRangeError);
    const gone = rt.allocDevice(layerBytes);
    gone.dispose();
    expect(() => KVPool.wrap(rt, options, { k: [gone, at(1)], v: [at(2), at(3)] })).toThrow(BadStateError);
    using big = rt.allocDevice(layerBytes);
    const pool = KVPool.wrap(rt, options, { k: [big, at(1)], v: [at(2), at(3)] });
    expect(pool.buffers).toEqual([big]);
    expect(pool.layout(0).k).toBe(Number(big.address));
    expect(pool.layout(1).v).toBe(at(3));
    // Page copies move the caller's pages: refused.
    expect(native().pkv_kvpool_copy_pages(pool.poolHandle, 1, Int32Array.of(0), Int32Array.of(1))).toBe(4);
    pool.dispose();
    big.write(new Uint8Array(16)); // still ours, still alive
    expect(() => pool.layout(0)).toThrow(BadStateError);
  });

  test("one engine plans a wrapped pool: another's paged plan is refused until the first is disposed", () => {
    using rt = openRuntime({ backend: "cpu" });
    const keep: unknown[] = [];
    const lb = layeredBatch(SHAPE, [20, 5], 1, 4);
    using pool = wrapPool(rt, lb, (bytes) => hostMemory(bytes, keep));
    const table = { indptr: lb.batch.pageIndptr, indices: lb.batch.pageIndices, lastPageLen: lb.lastPageLen };
    const first = rt.createDecodeEngine({ cache: pool, numQoHeads: 8 });
    using second = rt.createDecodeEngine({ cache: pool, numQoHeads: 8 });
    const plan = first.planPaged(pool, table);
    expect(() => second.planPaged(pool, table)).toThrow(BadStateError);
    const out = new Uint16Array(lb.batch.q.length);
    first.run(plan, 0, lb.batch.q, out); // the refused plan changed nothing of the first engine's
    expect(layerError(lb, 0, out)).toBeLessThan(2e-3);
    first.dispose();
    const taken = second.planPaged(pool, table);
    second.run(taken, 0, lb.batch.q, out);
    expect(layerError(lb, 0, out)).toBeLessThan(2e-3);
  });

  test("a plan whose wrapped pool was disposed cannot run", () => {
    using rt = openRuntime({ backend: "cpu" });
    const keep: unknown[] = [];
    const lb = layeredBatch(SHAPE, [20], 1, 2);
    const pool = wrapPool(rt, lb, (bytes) => hostMemory(bytes, keep));
    using engine = rt.createDecodeEngine({ cache: pool, numQoHeads: 8 });
    const plan = engine.planPaged(pool, {
      indptr: lb.batch.pageIndptr,
      indices: lb.batch.pageIndices,
      lastPageLen: lb.lastPageLen,
    });
    pool.dispose();
    expect(() => engine.run(plan, 0, lb.batch.q, new Uint16Array(lb.batch.q.length))).toThrow(BadStateError);
  });
});
