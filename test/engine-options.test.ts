// An engine made from a cache takes the KV shape from it; a shape field stated as well must agree.
import { afterAll, describe, expect, test } from "bun:test";
import { BadStateError, InvalidArgumentError } from "../lib/errors";
import { openRuntime } from "../lib/runtime";

const rt = openRuntime({ backend: "cpu" });
afterAll(() => rt.dispose());

const shape = { numLayers: 1, numPages: 16, pageSize: 8, numKvHeads: 2, headDim: 64, dtype: "bf16" } as const;

function halves(n: number, seed: number): Uint16Array {
  return Uint16Array.from({ length: n }, (_, i) => 0x3c00 + ((i * 37 + seed * 11) % 997)); // finite values near 1
}

describe("createDecodeEngine({ cache, ... })", () => {
  test("takes KV heads, head dim, page size and dtype from the cache", () => {
    using cache = rt.createKVCache(shape);
    using engine = rt.createDecodeEngine({ cache, numQoHeads: 8, policy: "persistent", maxBatch: 4 });
    expect([engine.numKvHeads, engine.headDim, engine.pageSize, engine.dtype]).toEqual([2, 64, 8, "bf16"]);
    expect([engine.numQoHeads, engine.policy, engine.maxBatch]).toEqual([8, "persistent", 4]);
  });

  test("runs exactly as the engine with the same shape stated explicitly", () => {
    using cache = rt.createKVCache(shape);
    const seq = cache.createSequence();
    const slots = cache.append(seq, 21);
    const n = 21 * shape.numKvHeads * shape.headDim;
    cache.writeKV(0, slots, halves(n, 1), halves(n, 2));
    const q = halves(8 * shape.headDim, 3);
    const outputs = [
      rt.createDecodeEngine({ cache, numQoHeads: 8 }),
      rt.createDecodeEngine({ numQoHeads: 8, numKvHeads: 2, headDim: 64, pageSize: 8, dtype: "bf16" }),
    ].map((engine) => {
      const out = new Uint16Array(q.length);
      engine.run(engine.plan(cache, [seq]), 0, q, out);
      engine.dispose();
      return out;
    });
    expect(outputs[0]!.some((x) => x !== 0)).toBe(true);
    expect(outputs[0]).toEqual(outputs[1]!);
  });

  test("accepts shape fields that agree and names every one that does not", () => {
    using cache = rt.createKVCache(shape);
    rt.createDecodeEngine({ cache, numQoHeads: 4, headDim: 64, dtype: "bf16" }).dispose();
    const make = () => rt.createDecodeEngine({ cache, numQoHeads: 4, headDim: 128, pageSize: 8, dtype: "f16" });
    expect(make).toThrow(InvalidArgumentError);
    expect(make).toThrow('headDim 128 (the cache has 64), dtype "f16" (the cache has "bf16") disagree with the cache');
  });

  test("refuses a disposed cache and a value that is not a cache", () => {
    const cache = rt.createKVCache(shape);
    cache.dispose();
    expect(() => rt.createDecodeEngine({ cache, numQoHeads: 4 })).toThrow(BadStateError);
    const notACache = { cache: 7, numQoHeads: 4 } as unknown as Parameters<typeof rt.createDecodeEngine>[0];
    expect(() => rt.createDecodeEngine(notACache)).toThrow("cache is not a KV cache");
  });
});
