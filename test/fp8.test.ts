// FP8 KV storage on the CPU backend: the e4m3 conversion against one derived from the format's definition
// (every f16 value, every rounding boundary, random floats), the quantization rule, pool sizing, the cache's
// operations on FP8 pages (codes and scales byte-exact through fork, copy-on-write, prefix hits and swaps),
// and decode on FP8 pages against the reference and an independent float64 attention.
import { describe, expect, test } from "bun:test";
import { decode, decodeE4m3, encode, encodeE4m3 as encodeE4m3Ts, kvPageBytes } from "../lib/dtype.ts";
import { InvalidArgumentError, UnsupportedError } from "../lib/errors.ts";
import { native } from "../lib/ffi/loader.ts";
import { openRuntime } from "../lib/index.ts";
import { type DecodeCase, runCase, tolerance } from "../lib/testing/decode-check.ts";
import { randomHalves, rng } from "../lib/testing/pool.ts";
import { decodeAttention } from "./support/attention.ts";
import { encodeE4m3, fp8RoundTrip, nearestE4m3, quantizeRow } from "./support/fp8.ts";

const bitsOf = (values: Float32Array) => new Uint32Array(values.buffer, values.byteOffset, values.length);
const floatsOf = (bits: Uint32Array) => new Float32Array(bits.buffer, bits.byteOffset, bits.length);

// The library's native encoder and its TypeScript one, both against the nearest-value search.
function expectEncodings(values: Float32Array): void {
  const got = encodeE4m3(values),
    ts = encodeE4m3Ts(values);
  const bad: string[] = [];
  for (let i = 0; i < values.length && bad.length < 5; i++) {
    const want = nearestE4m3(values[i]!);
    if (ts[i] !== want) bad.push(`TypeScript: ${values[i]}: 0x${ts[i]!.toString(16)}, want 0x${want.toString(16)}`);
    if (got[i] !== want)
      bad.push(
        `${values[i]} (0x${bitsOf(values)[i]!.toString(16)}): 0x${got[i]!.toString(16)}, want 0x${want.toString(16)}`,
      );
  }
  expect(bad).toEqual([]);
}

describe("e4m3 conversion", () => {
  test("every f16 value encodes to the nearest code (ties to even, saturating, NaN 0x7F)", () => {
    expectEncodings(
      decode(
        "f16",
        Uint16Array.from({ length: 65536 }, (_, i) => i),
      ),
    );
  });

  test("every rounding boundary: each midpoint between neighbouring codes and the floats either side", () => {
    const codes = decodeE4m3(Uint8Array.from({ length: 0x7f }, (_, i) => i));
    const mids: number[] = [];
    for (let c = 0; c + 1 < codes.length; c++) mids.push((codes[c]! + codes[c + 1]!) / 2);
    mids.push(448, 464, 480); // the largest code, the midpoint past it, and what would be the next code
    const bits = bitsOf(Float32Array.from(mids));
    const all: number[] = [];
    for (const b of bits) for (const delta of [-1, 0, 1]) all.push(b + delta, (b + delta) | 0x80000000);
    expectEncodings(floatsOf(Uint32Array.from(all)));
  });

  test("random floats of every exponent", () => {
    const random = rng(16);
    const bits = Uint32Array.from({ length: 60000 }, () => (random() * 2 ** 32) >>> 0);
    // Also a dense sample of the e4m3 range, where rounding happens.
    const dense = Float32Array.from({ length: 60000 }, () => (random() * 2 - 1) * 500 * 2 ** -(random() * 14));
    expectEncodings(floatsOf(bits));
    expectEncodings(dense);
  });

  test("decoding: every code, and each finite code encodes back to itself", () => {
    const codes = Uint8Array.from({ length: 256 }, (_, i) => i);
    const got = new Float32Array(256);
    expect(native().pkv_fp8_e4m3_decode(256, codes, got)).toBe(0);
    expect(Array.from(got)).toEqual(Array.from(decodeE4m3(codes)));
    expect(got[0x7e]).toBe(448);
    expect(got[0x01]).toBe(2 ** -9);
    expect(Number.isNaN(got[0x7f]!) && Number.isNaN(got[0xff]!)).toBe(true);
    const finite = Array.from(codes).filter((c) => (c & 0x7f) !== 0x7f);
    expect(Array.from(encodeE4m3(Float32Array.from(finite, (c) => got[c]!)))).toEqual(finite);
  });
});

describe("FP8 pool layout", () => {
  test("page bytes: codes, then a float scale per (slot, head), padded to 16 bytes; about half of f16", () => {
    for (const heads of [1, 3, 8])
      for (const pageSize of [1, 2, 16, 256])
        for (const headDim of [64, 128, 256]) {
          const fp8 = Number(native().pkv_kv_layer_page_bytes(2, heads, pageSize, headDim));
          expect(fp8).toBe(kvPageBytes("fp8_e4m3", heads, pageSize, headDim));
          expect(fp8 % 16).toBe(0);
          expect(Number(native().pkv_kv_layer_page_bytes(0, heads, pageSize, headDim))).toBe(
            2 * heads * pageSize * headDim,
          );
          const ratio = fp8 / (2 * heads * pageSize * headDim);
          expect(ratio).toBeGreaterThanOrEqual(0.5 + 2 / headDim);
          expect(ratio).toBeLessThanOrEqual(0.5 + 2 / headDim + 16 / (2 * heads * pageSize * headDim));
        }
    expect(Number(native().pkv_kv_layer_page_bytes(9, 1, 16, 128))).toBe(0);
  });
});

describe("an FP8 KV cache (CPU)", () => {
  const shape = { numLayers: 2, numKvHeads: 3, headDim: 64, pageSize: 8, dtype: "fp8_e4m3" as const };

  test("writes quantize each (token, head) row: codes and scale as the rule says, values back within e4m3 error", () => {
    using rt = openRuntime({ backend: "cpu" });
    for (const queryDtype of ["f16", "bf16"] as const) {
      using cache = rt.createKVCache({ ...shape, numPages: 8, queryDtype });
      const seq = cache.createSequence();
      const n = 13,
        E = shape.numKvHeads * shape.headDim;
      const random = rng(3);
      const k = randomHalves(queryDtype, n * E, random, 4);
      const v = randomHalves(queryDtype, n * E, random, 0.01);
      k.fill(0, 2 * E, 2 * E + shape.headDim); // a zero row: scale 0, codes 0
      cache.writeKV(1, cache.append(seq, n), k, v);
      const raw = cache.readKVRaw(1, seq);
      const values = { k: decode(queryDtype, k), v: decode(queryDtype, v) };
      for (const which of ["k", "v"] as const)
        for (let row = 0; row < n * shape.numKvHeads; row++) {
          const want = quantizeRow(values[which].subarray(row * shape.headDim, (row + 1) * shape.headDim));
          const codes = raw[which].subarray(row * shape.headDim, (row + 1) * shape.headDim);
          expect(Array.from(codes)).toEqual(Array.from(want.codes));
          expect(raw[which === "k" ? "kScales" : "vScales"][row]).toBe(want.scale);
        }
      expect(raw.kScales[2 * shape.numKvHeads]).toBe(0);
      const back = cache.readKV(1, seq);
      expect(Array.from(back.k)).toEqual(Array.from(fp8RoundTrip(queryDtype, k, shape.headDim)));
      expect(Array.from(back.v)).toEqual(Array.from(fp8RoundTrip(queryDtype, v, shape.headDim)));
      // Every value within e4m3's half step of its row's scale grid (and the value type's own rounding).
      const got = decode(queryDtype, back.k);
      for (let i = 0; i < got.length; i++) {
        const x = values.k[i]!,
          scale = raw.kScales[Math.floor(i / shape.headDim)]!;
        expect(Math.abs(got[i]! - x)).toBeLessThanOrEqual(Math.abs(x) / 16 + scale * 2 ** -10 + Math.abs(x) / 64);
      }
      // The other layer was not touched by the write.
      expect(cache.readKVRaw(0, seq).kScales.length).toBe(n * shape.numKvHeads);
    }
  });

  test("NaNs in a row do not raise its scale: f16 NaNs (signalling once widened) are skipped as the GPU skips them", () => {
    using rt = openRuntime({ backend: "cpu" });
    using cache = rt.createKVCache({
      numLayers: 1,
      numPages: 1,
      pageSize: 16,
      numKvHeads: 1,
      headDim: 64,
      dtype: "fp8_e4m3",
    });
    const row = new Uint16Array(64);
    row[0] = encode("f16", [448])[0]!;
    for (let i = 1; i < 64; i++) row[i] = i % 2 ? 0x7c01 + i : 0x5ec1 + i; // NaNs between values near 448
    const seq = cache.createSequence();
    cache.writeKV(0, cache.append(seq, 1), row, row.slice());
    const raw = cache.readKVRaw(0, seq);
    expect(raw.kScales[0]).toBe(1);
    const values = decode("f16", row);
    expect(Array.from(raw.k)).toEqual(Array.from(values, (x) => nearestE4m3(x)));
  });

  test("fork, copy-on-write, prefix hits and swaps keep codes and scales byte for byte", () => {
    using rt = openRuntime({ backend: "cpu" });
    using cache = rt.createKVCache({ ...shape, numPages: 24, swapPages: 12 });
    const E = shape.numKvHeads * shape.headDim;
    const random = rng(5);
    const write = (slots: Int32Array) => {
      for (let layer = 0; layer < shape.numLayers; layer++)
        cache.writeKV(
          layer,
          slots,
          randomHalves("f16", slots.length * E, random, 3),
          randomHalves("f16", slots.length * E, random, 3),
        );
    };
    const raw = (seq: ReturnType<typeof cache.createSequence>) => [0, 1].map((layer) => cache.readKVRaw(layer, seq));
    const prefix = (r: ReturnType<typeof raw>, tokens: number) =>
      r.map((l) => ({
        k: Array.from(l.k.subarray(0, tokens * E)),
        v: Array.from(l.v.subarray(0, tokens * E)),
        ks: Array.from(l.kScales.subarray(0, tokens * shape.numKvHeads)),
        vs: Array.from(l.vScales.subarray(0, tokens * shape.numKvHeads)),
      }));
    const ids = Int32Array.from({ length: 21 }, (_, i) => 100 + i);
    const parent = cache.createSequence();
    write(cache.append(parent, ids));
    const before = raw(parent);

    const child = cache.fork(parent);
    write(cache.append(child, 3)); // copies the shared partial page first
    expect(prefix(raw(child), 21)).toEqual(prefix(before, 21));
    expect(prefix(raw(parent), 21)).toEqual(prefix(before, 21));

    cache.swapOut(parent);
    expect(cache.stats().pagesSwapped).toBeGreaterThan(0);
    cache.swapIn(parent);
    expect(prefix(raw(parent), 21)).toEqual(prefix(before, 21));

    // Its two full pages are registered when it is released; a new prompt with the same ids finds them.
    cache.release(parent);
    const again = cache.createSequence({ tokens: ids });
    expect(again.prefixHitTokens).toBe(16);
    expect(prefix(raw(again), 16)).toEqual(prefix(before, 16));
  });

  test("misuse: raw reads of 16-bit caches, a query type that differs from 16-bit storage, unknown dtypes", () => {
    using rt = openRuntime({ backend: "cpu" });
    using f16 = rt.createKVCache({ ...shape, dtype: "f16", numPages: 4 });
    const seq = f16.createSequence();
    f16.append(seq, 2);
    expect(() => f16.readKVRaw(0, seq)).toThrow(InvalidArgumentError);
    expect(() => rt.createKVCache({ ...shape, dtype: "bf16", queryDtype: "f16", numPages: 4 })).toThrow(/queryDtype/);
    expect(() => rt.createKVCache({ ...shape, dtype: "fp8" as "f16", numPages: 4 })).toThrow(InvalidArgumentError);
    expect(() => rt.createKVCache({ ...shape, queryDtype: "fp8_e4m3" as "f16", numPages: 4 })).toThrow(
      InvalidArgumentError,
    );
    using fp8 = rt.createKVCache({ ...shape, numPages: 4 });
    const s = fp8.createSequence();
    const slots = fp8.append(s, 2);
    // Values of the query type (f16 here): a Float32Array is refused before anything is written.
    expect(() => fp8.writeKV(0, slots, new Float32Array(2 * 192) as never, new Float32Array(2 * 192) as never)).toThrow(
      InvalidArgumentError,
    );
    // FP8 pages take bulk copies at head dim 128 only: elsewhere they are refused, not silently replaced.
    expect(() => rt.createDecodeEngine({ cache: fp8, numQoHeads: 6, settings: { loader: "bulk" } })).toThrow(
      UnsupportedError,
    );
    using plain = rt.createDecodeEngine({ cache: fp8, numQoHeads: 6 });
    expect(plain.settings.loader).toBe("cp-async");
    using fp8d128 = rt.createKVCache({ ...shape, headDim: 128, numPages: 4 });
    using bulk = rt.createDecodeEngine({ cache: fp8d128, numQoHeads: 6, settings: { loader: "bulk" } });
    expect(bulk.settings).toMatchObject({ math: "tensor-cores", loader: "bulk" });
  });
});

describe("decode on FP8 pages (CPU backend)", () => {
  const check = (c: DecodeCase) => {
    using rt = openRuntime({ backend: "cpu" });
    for (const r of runCase(rt, c)) {
      expect({ policy: r.policy, unwritten: r.unwritten }).toEqual({ policy: r.policy, unwritten: 0 });
      expect(r.relError).toBeLessThan(tolerance(c.dtype, c.queryDtype));
      expect(r.lseError).toBeLessThan(2e-3);
    }
  };

  test("group sizes, head dims, page sizes, f16 and bf16 queries, partial pages, length 1", () => {
    check({ group: 4, numKvHeads: 2, headDim: 128, pageSize: 16, dtype: "fp8_e4m3", lengths: [1, 15, 16, 17, 700] });
    check({
      group: 1,
      numKvHeads: 3,
      headDim: 64,
      pageSize: 1,
      dtype: "fp8_e4m3",
      queryDtype: "bf16",
      lengths: [1, 2, 300],
    });
    check({ group: 7, numKvHeads: 1, headDim: 256, pageSize: 256, dtype: "fp8_e4m3", lengths: [255, 257, 600] });
    check({
      group: 16,
      numKvHeads: 1,
      headDim: 64,
      pageSize: 4,
      dtype: "fp8_e4m3",
      queryDtype: "bf16",
      lengths: [9, 1000],
    });
  });

  test("plans count FP8 bytes: codes and a scale per token and KV head, K and V", () => {
    using rt = openRuntime({ backend: "cpu" });
    using cache = rt.createKVCache({
      numLayers: 1,
      numPages: 8,
      pageSize: 16,
      numKvHeads: 2,
      headDim: 128,
      dtype: "fp8_e4m3",
    });
    using engine = rt.createDecodeEngine({ cache, numQoHeads: 8 });
    expect(engine.queryDtype).toBe("f16");
    expect([engine.settings.math, engine.settings.loader]).toEqual(["tensor-cores", "cp-async"]);
    const seq = cache.createSequence();
    cache.writeKV(0, cache.append(seq, 40), new Uint16Array(40 * 256), new Uint16Array(40 * 256));
    expect(engine.plan(cache, [seq]).kvBytes).toBe(40 * 2 * 2 * (128 + 4));
  });

  test("the reference reads FP8 pages as codes times scales (against float64 attention over dequantized values)", () => {
    using rt = openRuntime({ backend: "cpu" });
    const hkv = 2,
      d = 64,
      ps = 4,
      len = 37,
      hq = 6;
    using cache = rt.createKVCache({
      numLayers: 1,
      numPages: 10,
      pageSize: ps,
      numKvHeads: hkv,
      headDim: d,
      dtype: "fp8_e4m3",
    });
    using engine = rt.createDecodeEngine({ cache, numQoHeads: hq });
    const random = rng(11);
    const k = randomHalves("f16", len * hkv * d, random, 2),
      v = randomHalves("f16", len * hkv * d, random, 2);
    const seq = cache.createSequence();
    cache.writeKV(0, cache.append(seq, len), k, v);
    const q = randomHalves("f16", hq * d, random, 2);
    const out = new Uint16Array(hq * d);
    engine.run(engine.plan(cache, [seq]), 0, q, out);
    // Pages of one token each, holding the values the cache reads back (exactly code * scale for f16 values).
    const { k: kBack, v: vBack } = cache.readKV(0, seq);
    const want = decodeAttention(
      {
        numQoHeads: hq,
        numKvHeads: hkv,
        headDim: d,
        pageSize: 1,
        dtype: "f16",
        numPages: len,
        pageIndptr: Int32Array.of(0, len),
        pageIndices: Int32Array.from({ length: len }, (_, i) => i),
        seqLens: Int32Array.of(len),
        kPages: kBack,
        vPages: vBack,
        q,
      },
      1 / Math.sqrt(d),
    ).out;
    const got = decode("f16", out);
    let diff = 0,
      norm = 0;
    for (let i = 0; i < got.length; i++) {
      diff += (got[i]! - want[i]!) ** 2;
      norm += want[i]! ** 2;
    }
    expect(Math.sqrt(diff / norm)).toBeLessThan(3e-3);
    expect(Array.from(encode("f16", got))).toEqual(Array.from(out));
  });
});
