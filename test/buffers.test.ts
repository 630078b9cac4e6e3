// Buffer round trips (write/read/copyFrom/fill) and zero-copy pinned views, on every backend present:
// the CPU backend always, CUDA too where a device is visible (the GPU machine runs this same file).
import { describe, expect, test } from "bun:test";
import * as pkv from "../lib/index.ts";
import { native } from "../lib/ffi/loader.ts";

const BACKENDS: pkv.Backend[] = pkv.cudaDeviceCount() > 0 ? ["cpu", "cuda"] : ["cpu"];

function randomBytes(n: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x & 0xff;
  }
  return bytes;
}

function readAll(buf: pkv.NativeBuffer, offset = 0, bytes = buf.bytes - offset): Uint8Array {
  const out = new Uint8Array(bytes);
  buf.read(out, offset);
  return out;
}

for (const backend of BACKENDS) {
  describe(`${backend} buffers`, () => {
    test("device and pinned allocations report kind, size and an address", () => {
      using rt = pkv.openRuntime({ backend });
      using d = rt.allocDevice(1000);
      using p = rt.allocPinned(1000);
      expect(d.kind).toBe("device");
      expect(p.kind).toBe("pinned");
      for (const [buf, kind] of [
        [d, 0],
        [p, 1],
      ] as const) {
        expect(buf.bytes).toBe(1000);
        expect(buf.address).toBeGreaterThan(0);
        expect(buf.address % 256).toBe(0); // 256-byte alignment (16-byte vectors, page slices)
        const size = new BigUint64Array(1);
        const k = new Int32Array(1);
        expect(native().pkv_buffer_size(buf.handle, size)).toBe(0);
        expect(native().pkv_buffer_kind(buf.handle, k)).toBe(0);
        expect(Number(size[0])).toBe(1000);
        expect(k[0]).toBe(kind);
      }
    });

    test("write then read returns the same bytes (whole, offset, sub-range)", () => {
      using rt = pkv.openRuntime({ backend });
      for (const buf of [rt.allocDevice(4099), rt.allocPinned(4099)]) {
        using _ = buf;
        const data = randomBytes(4099, 7);
        buf.write(data);
        expect(readAll(buf)).toEqual(data);
        const patch = randomBytes(100, 8);
        buf.write(patch, 1001);
        const expected = data.slice();
        expected.set(patch, 1001);
        expect(readAll(buf)).toEqual(expected);
        expect(readAll(buf, 1000, 102)).toEqual(expected.subarray(1000, 1102));
        expect(readAll(buf, 4098, 1)).toEqual(expected.subarray(4098));
      }
    });

    test("typed arrays of any element type, and subarrays, travel as their own bytes", () => {
      using rt = pkv.openRuntime({ backend });
      using buf = rt.allocDevice(64);
      const floats = new Float32Array([1.5, -2.25, 3e-8, 65504, Number.NaN, -0, Infinity, 7]);
      buf.write(floats);
      const back = new Float32Array(8);
      buf.read(back);
      expect(new Uint8Array(back.buffer)).toEqual(new Uint8Array(floats.buffer));
      // A subarray starts at its byteOffset, not at the start of its ArrayBuffer.
      const big = new Uint16Array([10, 11, 12, 13, 14, 15, 16, 17]);
      buf.write(big.subarray(3, 6), 32);
      const part = new Uint16Array(8).fill(0xffff);
      buf.read(part.subarray(2, 5), 32);
      expect([...part]).toEqual([0xffff, 0xffff, 13, 14, 15, 0xffff, 0xffff, 0xffff]);
    });

    test("a 16 MiB round trip is exact", () => {
      using rt = pkv.openRuntime({ backend });
      using buf = rt.allocDevice(16 << 20);
      const data = randomBytes(16 << 20, 99);
      buf.write(data);
      expect(Buffer.compare(readAll(buf), data)).toBe(0);
    });

    test("copyFrom between device and pinned buffers, with offsets, on a stream", () => {
      using rt = pkv.openRuntime({ backend });
      using stream = rt.createStream();
      using a = rt.allocDevice(2048);
      using b = rt.allocDevice(2048);
      using p = rt.allocPinned(2048);
      const data = randomBytes(2048, 3);
      a.write(data);
      b.copyFrom(a); // whole buffer, runtime stream
      p.copyFrom(b, { srcOffset: 100, dstOffset: 200, bytes: 1000, stream });
      stream.synchronize();
      expect(readAll(b)).toEqual(data);
      expect(readAll(p, 200, 1000)).toEqual(data.subarray(100, 1100));
      // and back: pinned -> device
      b.fill(0);
      b.copyFrom(p, { srcOffset: 200, dstOffset: 0, bytes: 1000 });
      rt.synchronize();
      expect(readAll(b, 0, 1000)).toEqual(data.subarray(100, 1100));
      expect(readAll(b, 1000, 1048)).toEqual(new Uint8Array(1048));
    });

    test("copyFrom defaults to the smaller of the two sizes", () => {
      using rt = pkv.openRuntime({ backend });
      using small = rt.allocDevice(100);
      using large = rt.allocDevice(300);
      const data = randomBytes(300, 5);
      large.write(data);
      small.copyFrom(large);
      rt.synchronize();
      expect(readAll(small)).toEqual(data.subarray(0, 100));
    });

    test("fill sets a byte range and nothing else", () => {
      using rt = pkv.openRuntime({ backend });
      for (const buf of [rt.allocDevice(1000), rt.allocPinned(1000)]) {
        using _ = buf;
        buf.fill(0xab);
        buf.fill(0x01, { offset: 10, bytes: 20 });
        rt.synchronize();
        const expected = new Uint8Array(1000).fill(0xab);
        expected.fill(0x01, 10, 30);
        expect(readAll(buf)).toEqual(expected);
      }
    });
  });

  describe(`${backend} pinned views (zero copy)`, () => {
    test("a write through a view is seen by a native read, and a native write by the view", () => {
      using rt = pkv.openRuntime({ backend });
      using p = rt.allocPinned(4096);
      const view = p.view(Uint8Array);
      expect(view.length).toBe(4096);
      view.set(randomBytes(4096, 11));
      expect(readAll(p)).toEqual(view);
      const data = randomBytes(4096, 12);
      p.write(data);
      expect(view as Uint8Array).toEqual(data);
    });

    test("views of other types, offsets and lengths alias the same memory", () => {
      using rt = pkv.openRuntime({ backend });
      using p = rt.allocPinned(1024);
      const f32 = p.view(Float32Array, 64, 4);
      const i32 = p.view(Int32Array);
      expect(f32.length).toBe(4);
      expect(i32.length).toBe(256);
      f32[1] = 1.0;
      expect(i32[17]).toBe(0x3f800000); // byte 68 = int index 17
      i32[16] = 0x40000000;
      expect(f32[0]).toBe(2.0);
      // a native copy into the pinned buffer is visible through the view after synchronising
      using d = rt.allocDevice(16);
      d.write(new Float32Array([5, 6, 7, 8]));
      p.copyFrom(d, { dstOffset: 64, bytes: 16 });
      rt.synchronize();
      expect([...f32]).toEqual([5, 6, 7, 8]);
      // and a view written by TypeScript is a source for a native copy
      f32.set([9, 10, 11, 12]);
      d.copyFrom(p, { srcOffset: 64, bytes: 16 });
      const back = new Float32Array(4);
      d.read(back);
      expect([...back]).toEqual([9, 10, 11, 12]);
    });

    test("view lengths and offsets must be whole, finite, non-negative numbers; nothing is viewed otherwise", () => {
      using rt = pkv.openRuntime({ backend });
      using p = rt.allocPinned(256);
      // A fractional length made a view of 2 elements from 2.5; a fractional offset was rounded down.
      for (const length of [2.5, -1, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53])
        expect(() => p.view(Float32Array, 0, length)).toThrow(pkv.InvalidArgumentError);
      for (const offset of [4.5, -4, Number.NaN, Number.POSITIVE_INFINITY])
        expect(() => p.view(Uint8Array, offset)).toThrow(/view: byteOffset/);
      expect(() => p.view(Uint8Array, 0, 257)).toThrow(pkv.OutOfRangeError);
      expect(() => p.view(Object as never)).toThrow(pkv.InvalidArgumentError);
      expect(p.view(Float32Array, 8, 0).length).toBe(0);
      expect(p.view(Float32Array, 8).length).toBe(62);
      expect(p.view(Uint8Array, 256).length).toBe(0);
    });

    test("views detach (length 0) when the buffer is disposed", () => {
      using rt = pkv.openRuntime({ backend });
      const p = rt.allocPinned(256);
      const a = p.view(Uint8Array);
      const b = p.view(Float64Array, 8, 2);
      a[0] = 1;
      p.dispose();
      expect(a.length).toBe(0);
      expect(a.byteLength).toBe(0);
      expect(b.length).toBe(0);
      expect(a[0]).toBeUndefined(); // reads nothing, not freed memory
    });

    test("views detach when their runtime is disposed", () => {
      const rt = pkv.openRuntime({ backend });
      const p = rt.allocPinned(256);
      const view = p.view(Uint32Array);
      view.fill(7);
      rt.dispose();
      expect(view.length).toBe(0);
      expect(p.disposed).toBe(true);
    });
  });
}
