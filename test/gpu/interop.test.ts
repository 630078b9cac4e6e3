// Interop on the CUDA backend: device memory made by another path (our own allocations, handed over by
// address only, standing in for a framework's tensors) wrapped as buffers and as a KV pool, a caller's
// stream, cudaMemGetInfo, and plans from the caller's page table checked against pkv_reference_decode.
// Skips visibly without a device; fails with PKV_REQUIRE_GPU=1.
import { ptr } from "bun:ffi";
import { expect, test } from "bun:test";
import { DeviceBuffer, InvalidArgumentError, KVPool, openRuntime, PinnedBuffer, Stream } from "../../lib/index.ts";
import { describeGpu } from "../support/gpu.ts";
import { blockTableOf, deviceMemory, layerError, layeredBatch, wrapPool } from "../support/interop.ts";

const SHAPES = [
  { numQoHeads: 32, numKvHeads: 8, headDim: 128, pageSize: 16, dtype: "f16" as const },
  { numQoHeads: 12, numKvHeads: 4, headDim: 64, pageSize: 8, dtype: "bf16" as const },
  { numQoHeads: 16, numKvHeads: 2, headDim: 256, pageSize: 32, dtype: "f16" as const },
];
const LENS = [1, 16, 17, 255, 256, 257, 1000, 4097, 3];

describeGpu("interop on the GPU", () => {
  test("a wrapped device allocation is the same memory; wrapping host or foreign memory as device is refused", () => {
    using rt = openRuntime({ backend: "cuda" });
    using own = rt.allocDevice(4096);
    own.write(Uint8Array.from({ length: 4096 }, (_, i) => i & 0xff));
    const alias = DeviceBuffer.wrap(rt, own.address, 4096);
    expect(alias.wrapped).toBe(true);
    const back = new Uint8Array(4096);
    alias.read(back);
    expect(back[4095]).toBe(0xff);
    alias.fill(7, { offset: 16, bytes: 16 });
    alias.dispose(); // forgets; the allocation stays ours and alive
    own.read(back);
    expect(back[16]).toBe(7);
    expect(back[32]).toBe(32);
    // Past the allocation's end: its last byte is not device memory.
    expect(() => DeviceBuffer.wrap(rt, own.address, 2 ** 40)).toThrow(InvalidArgumentError);
    using pinned = rt.allocPinned(4096);
    expect(() => DeviceBuffer.wrap(rt, pinned.address, 4096)).toThrow("pinned host memory");
    const host = new Uint8Array(8192);
    const hostAddress = ptr(host);
    const aligned = hostAddress + ((16 - (hostAddress % 16)) % 16);
    expect(() => DeviceBuffer.wrap(rt, aligned, 4096)).toThrow("unregistered");
    expect(() => PinnedBuffer.wrap(rt, aligned, 4096)).toThrow("not page-locked");
    expect(() => PinnedBuffer.wrap(rt, own.address, 4096)).toThrow("not page-locked");
    const pinnedAlias = PinnedBuffer.wrap(rt, pinned.address, 4096);
    pinnedAlias.view(Uint8Array)[0] = 9;
    expect(pinned.view(Uint8Array)[0]).toBe(9);
    pinnedAlias.dispose();
  });

  test("memory info is cudaMemGetInfo: free below total, total the device's, an allocation lowers free", () => {
    using rt = openRuntime({ backend: "cuda" });
    const before = rt.memoryInfo();
    expect(Math.abs(before.totalBytes - rt.info.totalMemory)).toBeLessThanOrEqual(rt.info.totalMemory * 0.01);
    expect(before.freeBytes).toBeLessThanOrEqual(before.totalBytes);
    using big = rt.allocDevice(1 << 30);
    const after = rt.memoryInfo();
    expect(before.freeBytes - after.freeBytes).toBeGreaterThanOrEqual((1 << 30) - (64 << 20));
    // A cache sized from a fraction of free memory fits in it.
    const shape = { numLayers: 32, pageSize: 16, numKvHeads: 8, headDim: 128, dtype: "f16" as const };
    const free = rt.memoryInfo().freeBytes;
    using cache = rt.createKVCache({ ...shape, memoryFraction: 0.05, swapBytes: 64 << 20 });
    expect(cache.config.numPages * 2 * 1024 * 1024).toBeLessThanOrEqual(free * 0.05 * 1.01);
    expect(cache.config.numPages * 2 * 1024 * 1024).toBeGreaterThan(free * 0.05 * 0.9);
    expect(cache.config.numPages).toBeGreaterThan(100);
    expect(cache.config.swapPages).toBe(32);
    expect(big.bytes).toBe(1 << 30);
  });

  test("a wrapped stream is the caller's: runs queue on it, its handle comes back, destroying forgets it", () => {
    using rt = openRuntime({ backend: "cuda" });
    using own = rt.createStream();
    const handle = own.cudaStream;
    expect(handle).toBeGreaterThan(0);
    const theirs = Stream.wrap(rt, handle);
    expect(theirs.cudaStream).toBe(handle);
    using a = rt.allocDevice(1 << 20);
    using b = rt.allocDevice(1 << 20);
    a.fill(3);
    rt.synchronize();
    b.copyFrom(a, { stream: theirs });
    theirs.synchronize();
    theirs.dispose();
    own.synchronize(); // still alive: the wrapper did not destroy it
    const back = new Uint8Array(16);
    b.read(back);
    expect(back[15]).toBe(3);
    expect(() => Stream.wrap(rt, 0)).not.toThrow(); // the legacy default stream
  });

  test("a model writes K and V in place: rows wrapped at the layout's addresses read back through readKV", () => {
    using rt = openRuntime({ backend: "cuda" });
    using cache = rt.createKVCache({
      numLayers: 2,
      numPages: 16,
      pageSize: 16,
      numKvHeads: 2,
      headDim: 128,
      dtype: "bf16",
    });
    const seq = cache.createSequence();
    cache.append(seq, 20);
    const where = cache.positions(seq);
    const layout = cache.layout(1);
    const row = (t: number, h: number, v: number) =>
      Uint16Array.from({ length: 128 }, (_, i) => (t * 977 + h * 131 + i * 7 + v) & 0x3fff);
    for (let t = 0; t < 20; t++)
      for (let h = 0; h < 2; h++) {
        const at = where.pages[t]! * layout.pageBytes + h * layout.headBytes + where.offsets[t]! * layout.tokenBytes;
        for (const [base, v] of [
          [layout.k, 0],
          [layout.v, 1],
        ] as const) {
          const target = DeviceBuffer.wrap(rt, base + at, layout.tokenBytes);
          target.write(row(t, h, v));
          target.dispose();
        }
      }
    const back = cache.readKV(1, seq);
    for (let t = 0; t < 20; t++)
      for (let h = 0; h < 2; h++) {
        expect(back.k.subarray((t * 2 + h) * 128, (t * 2 + h + 1) * 128)).toEqual(row(t, h, 0));
        expect(back.v.subarray((t * 2 + h) * 128, (t * 2 + h + 1) * 128)).toEqual(row(t, h, 1));
      }
  });

  for (const shape of SHAPES)
    test(`planPaged over wrapped device pools equals the reference: ${shape.numQoHeads}/${shape.numKvHeads} heads, d ${shape.headDim}, page ${shape.pageSize}, ${shape.dtype}`, () => {
      using rt = openRuntime({ backend: "cuda" });
      const lb = layeredBatch(shape, LENS, 2, 17);
      using pool = wrapPool(rt, lb, (bytes) => deviceMemory(rt, bytes));
      using engine = rt.createDecodeEngine({ cache: pool, numQoHeads: shape.numQoHeads, maxBatch: 16 });
      const tolerance = shape.dtype === "f16" ? 2e-3 : 1.6e-2;
      const { pageIndptr: indptr, pageIndices: indices, seqLens } = lb.batch;
      const widest = Math.max(...LENS.map((len) => Math.ceil(len / shape.pageSize)));
      const tables = [
        { indptr, indices, lastPageLen: lb.lastPageLen },
        { blockTable: blockTableOf(lb, widest + 3), stride: widest + 3, seqLens },
      ];
      for (const policy of ["baseline", "persistent"] as const)
        for (const table of tables) {
          const plan = engine.planPaged(pool, table, { policy });
          for (let layer = 0; layer < 2; layer++) {
            // Host arrays, then device buffers on a wrapped stream.
            const out = new Uint16Array(lb.batch.q.length).fill(0x7fff);
            engine.run(plan, layer, lb.batch.q, out);
            expect(layerError(lb, layer, out)).toBeLessThan(tolerance);
            using q = rt.allocDevice(lb.batch.q.byteLength);
            using o = rt.allocDevice(lb.batch.q.byteLength);
            q.write(lb.batch.q);
            o.fill(0xff);
            rt.synchronize(); // the fill ran on the runtime's stream, the run goes on the caller's
            using mine = rt.createStream();
            const stream = Stream.wrap(rt, mine.cudaStream);
            engine.run(plan, layer, q, o, undefined, { stream });
            stream.synchronize();
            const back = new Uint16Array(lb.batch.q.length);
            o.read(back);
            expect(layerError(lb, layer, back)).toBeLessThan(tolerance);
            stream.dispose();
          }
        }
    }, 120_000);

  test("wrapping a pool over pinned host memory, or over a range that runs past an allocation, is refused", () => {
    using rt = openRuntime({ backend: "cuda" });
    const options = { numLayers: 1, numPages: 4, pageSize: 16, numKvHeads: 2, headDim: 64, dtype: "f16" as const };
    const layerBytes = 4 * 2 * 16 * 64 * 2;
    using k = rt.allocDevice(layerBytes);
    using small = rt.allocDevice(4096);
    using pinned = rt.allocPinned(layerBytes);
    expect(() => KVPool.wrap(rt, options, { k: [k.address], v: [pinned.address] })).toThrow("v_layers[0]");
    // A layer of 1 GiB pages over a 4 KiB allocation: the range's last byte is no allocation's.
    const huge = { ...options, numPages: (1 << 30) / (2 * 16 * 64 * 2) };
    expect(() => KVPool.wrap(rt, huge, { k: [small.address], v: [k.address] })).toThrow("k_layers[0]");
  });
});
