// The KV cache on the CUDA backend: the model-based random test (shorter than the CPU run), a byte-exact
// swap round trip at a realistic shape, copy-on-write through the GPU page copy, and device-buffer writes.
// Skips visibly without a device; fails with PKV_REQUIRE_GPU=1.
import { expect, test } from "bun:test";
import { KVCache, openRuntime } from "../../lib/index.ts";
import { describeGpu } from "../support/gpu.ts";
import { MODEL_CONFIGS, MODEL_OUTCOMES, runModel } from "../support/kvcache-model.ts";
import { Rng, testSeed } from "../support/kvcache.ts";

describeGpu("KV cache on the GPU", () => {
  test("5,000 random operations match the shadow model (CUDA)", () => {
    const seed = testSeed("kvcache model (cuda)", 20261123);
    using rt = openRuntime({ backend: "cuda" });
    const counts = runModel(rt, MODEL_CONFIGS, 1700, seed, 25);
    console.log(counts);
    for (const what of MODEL_OUTCOMES) expect(counts[what] ?? 0, what).toBeGreaterThan(0);
  }, 300_000);

  test("swapOut then swapIn is byte-exact in every layer, after the freed pages were overwritten", () => {
    using rt = openRuntime({ backend: "cuda" });
    const shape = { numLayers: 4, numKvHeads: 8, headDim: 128, pageSize: 16, dtype: "bf16" as const };
    using cache = new KVCache(rt, { ...shape, numPages: 64, swapPages: 64 });
    const rng = new Rng(7);
    const E = shape.numKvHeads * shape.headDim;
    const random = (n: number) => Uint16Array.from({ length: n * E }, () => rng.int(0x7f80)); // no NaN or Inf
    const seq = cache.createSequence();
    const slots = cache.append(seq, 500); // 31 full pages and a partial one
    const written = Array.from({ length: shape.numLayers }, (_, layer) => {
      const kv = { k: random(500), v: random(500) };
      cache.writeKV(layer, slots, kv.k, kv.v);
      return kv;
    });
    cache.swapOut(seq);
    expect(cache.stats().pagesSwapped).toBe(32);
    const other = cache.createSequence();
    const otherSlots = cache.append(other, 1000); // takes every freed page
    for (let layer = 0; layer < shape.numLayers; layer++) cache.writeKV(layer, otherSlots, random(1000), random(1000));
    cache.release(other);
    cache.swapIn(seq);
    for (let layer = 0; layer < shape.numLayers; layer++) {
      const back = cache.readKV(layer, seq);
      expect(Buffer.from(back.k.buffer).equals(Buffer.from(written[layer]!.k.buffer))).toBe(true);
      expect(Buffer.from(back.v.buffer).equals(Buffer.from(written[layer]!.v.buffer))).toBe(true);
    }
  });

  test("copy-on-write copies a shared partial page on the GPU; device-buffer writes land exactly", () => {
    using rt = openRuntime({ backend: "cuda" });
    using cache = new KVCache(rt, {
      numLayers: 2,
      numKvHeads: 2,
      headDim: 64,
      pageSize: 16,
      numPages: 8,
      dtype: "f16",
    });
    const E = 2 * 64;
    const data = (n: number, salt: number) => Uint16Array.from({ length: n * E }, (_, i) => (i * 31 + salt) & 0x3fff);
    const parent = cache.createSequence();
    const slots = cache.append(parent, 10);
    const k = data(10, 1);
    const v = data(10, 2);
    using kb = rt.allocDevice(k.byteLength);
    using vb = rt.allocDevice(v.byteLength);
    kb.write(k);
    vb.write(v);
    for (let layer = 0; layer < 2; layer++) cache.writeKV(layer, slots, kb, vb);
    const child = cache.fork(parent);
    const extra = cache.append(child, 1);
    expect(cache.pagesOf(child)[0]).not.toBe(cache.pagesOf(parent)[0]!);
    for (let layer = 0; layer < 2; layer++) cache.writeKV(layer, extra, data(1, 3), data(1, 4));
    for (let layer = 0; layer < 2; layer++) {
      expect(cache.readKV(layer, parent)).toEqual({ k, v });
      const back = cache.readKV(layer, child);
      expect(back.k.subarray(0, 10 * E)).toEqual(k);
      expect(back.k.subarray(10 * E)).toEqual(data(1, 3));
      expect(back.v.subarray(10 * E)).toEqual(data(1, 4));
    }
  });
});
