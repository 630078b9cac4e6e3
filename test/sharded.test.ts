// The cache and engine sharded by KV heads, on simulated CPU devices: results equal the one-device stack's
// (bit for bit where the plans split rows alike) and the CPU reference; page moves act on every shard; a
// failure injected on one shard leaves every shard as it was; the plan is built once.
import { describe, expect, test } from "bun:test";
import {
  BadStateError,
  createShardedRuntime,
  InvalidArgumentError,
  layoutHeads,
  OutOfRangeError,
  openRuntime,
  type Sequence,
  Status,
  type ShardedKVCache,
  StalePlanError,
} from "../lib/index.ts";
import { type Pointer, toArrayBuffer } from "bun:ffi";
import { KV_CONFIG, PLAN_INFO } from "../lib/ffi/layouts.ts";
import { native } from "../lib/ffi/loader.ts";
import { randomHalves, rng, tolerance } from "../lib/testing/index.ts";
import { testSeed } from "./support/kvcache.ts";
import { differing, relativeError, Twin, type TwinShape } from "./support/sharded.ts";

const SHAPE: TwinShape = {
  numLayers: 2,
  numPages: 96,
  pageSize: 16,
  numKvHeads: 12,
  numQoHeads: 24,
  headDim: 64,
  dtype: "f16",
  swapPages: 32,
};

describe("createShardedRuntime", () => {
  test("N simulated CPU devices, each its own runtime", () => {
    using srt = createShardedRuntime({ backend: "cpu", devices: 3 });
    expect(srt.size).toBe(3);
    expect(srt.devices).toEqual([0, 1, 2]);
    expect(new Set(srt.runtimes).size).toBe(3);
    expect(srt.runtimes.every((rt) => rt.backend === "cpu")).toBe(true);
    expect(srt.peerAccess).toBe(true);
    srt.synchronize();
  });

  test("bad device lists are refused with the reason", () => {
    expect(() => createShardedRuntime({ backend: "cpu", devices: 0 })).toThrow(InvalidArgumentError);
    expect(() => createShardedRuntime({ backend: "cpu", devices: [0, 0] })).toThrow(/names a device twice/);
    expect(() => createShardedRuntime({ backend: "cpu", devices: [] })).toThrow(/not a count or a non-empty array/);
    expect(() => createShardedRuntime({ backend: "tpu" as "cpu" })).toThrow(/is not "auto", "cuda" or "cpu"/);
  });

  test("disposing it disposes every shard's runtime and what was made from them", () => {
    const srt = createShardedRuntime({ backend: "cpu", devices: 2 });
    const cache = srt.createKVCache({ ...SHAPE });
    srt.dispose();
    expect(srt.runtimes.every((rt) => rt.disposed)).toBe(true);
    expect(() => cache.createSequence()).toThrow(BadStateError);
  });
});

describe("KV heads over devices", () => {
  test("split evenly, replicated when devices outnumber heads (as vLLM), refused otherwise", () => {
    expect(layoutHeads("t", 8, 2)).toEqual({ shards: 2, numKvHeads: 8, kvHeadsPerShard: 4, replicas: 1 });
    expect(layoutHeads("t", 2, 4)).toEqual({ shards: 4, numKvHeads: 2, kvHeadsPerShard: 1, replicas: 2 });
    expect(() => layoutHeads("t", 6, 4)).toThrow(/neither split evenly over 4 devices nor replicate/);
    expect(() => layoutHeads("t", 3, 2)).toThrow(InvalidArgumentError);
  });

  test("query heads must fall within each device's KV heads' groups", () => {
    using srt = createShardedRuntime({ backend: "cpu", devices: 4 });
    const base = { numKvHeads: 2, headDim: 64, pageSize: 16, dtype: "f16" as const };
    expect(() => srt.createDecodeEngine({ ...base, numQoHeads: 2 })).toThrow(/do not split over 4 devices/);
    using engine = srt.createDecodeEngine({ ...base, numQoHeads: 8 });
    expect(engine.qoHeadsPerShard).toBe(2);
    expect(engine.engines.map((e) => [e.numQoHeads, e.numKvHeads])).toEqual([
      [2, 1],
      [2, 1],
      [2, 1],
      [2, 1],
    ]);
  });
});

describe("sharded decode equals the one-device stack", () => {
  for (const devices of [2, 3, 4]) {
    test(`heads over ${devices} devices: random workloads`, () => {
      const seed = testSeed(`sharded decode x${devices}`, 1900 + devices);
      const random = rng(seed);
      using twin = new Twin("cpu", devices, SHAPE);
      // Lengths at and around page boundaries, a single token, and long rows the planner splits.
      for (const n of [1, 15, 16, 17, 33, 250, 700, 64, 5]) twin.add(n, random);
      let bitwise = 0;
      for (let round = 0; round < 6; round++) {
        const which = Array.from({ length: 1 + Math.floor(random() * twin.seqs.length) }, (_, i) => i).sort(
          () => random() - 0.5,
        );
        const layer = round % SHAPE.numLayers;
        const r = twin.step(which, layer, random);
        expect(differing(r.out, new Uint16Array(r.out.length).fill(0x7fff))).toBe(r.out.length); // all written
        expect(relativeError("f16", r.out, r.reference)).toBeLessThan(tolerance("f16"));
        // The same per-head math: identical bits wherever both plans keep every row in one piece.
        if (r.plan.leader.maxSplits === 1 && r.plan1.maxSplits === 1) {
          expect(differing(r.out, r.out1)).toBe(0);
          bitwise++;
        } else expect(relativeError("f16", r.out, r.out1)).toBeLessThan(tolerance("f16"));
        twin.grow(which[0]!, 1 + Math.floor(random() * 20), random);
      }
      for (let i = 0; i < twin.seqs.length; i++)
        for (let layer = 0; layer < SHAPE.numLayers; layer++) {
          const a = twin.cache.readKV(layer, twin.seqs[i]!),
            b = twin.one.readKV(layer, twin.seqs1[i]!);
          expect(differing(a.k, b.k) + differing(a.v, b.v)).toBe(0);
        }
      console.log(`x${devices}: ${bitwise} of 6 steps compared bit for bit (the rest split rows differently)`);
    });
  }

  test("short rows: bit for bit, split over 2, 3 and 4 devices", () => {
    for (const devices of [2, 3, 4]) {
      const random = rng(77 + devices);
      using twin = new Twin("cpu", devices, SHAPE);
      for (const n of [1, 7, 16, 31, 48, 100]) twin.add(n, random);
      const r = twin.step([5, 0, 3, 1], 1, random);
      expect([r.plan.leader.maxSplits, r.plan1.maxSplits]).toEqual([1, 1]);
      expect(differing(r.out, r.out1)).toBe(0);
    }
  });

  test("lse: whole and per-shard, equal to the one-device engine's", () => {
    const random = rng(9);
    using twin = new Twin("cpu", 3, SHAPE);
    for (const n of [9, 60, 130]) twin.add(n, random);
    const { numQoHeads: Hq, headDim: d } = SHAPE;
    const plan = twin.engine.plan(twin.cache, twin.seqs);
    const plan1 = twin.oneEngine.plan(twin.one, twin.seqs1);
    const q = randomHalves("f16", 3 * Hq * d, random);
    const [lse, lse1] = [new Float32Array(3 * Hq), new Float32Array(3 * Hq)];
    twin.engine.run(plan, 0, q, new Uint16Array(q.length), { lse });
    twin.oneEngine.run(plan1, 0, q, new Uint16Array(q.length), lse1);
    expect(Array.from(lse)).toEqual(Array.from(lse1));
    const per = twin.engine.qoHeadsPerShard;
    const qs = [0, 1, 2].map((s) => {
      const part = new Uint16Array(3 * per * d);
      for (let b = 0; b < 3; b++)
        part.set(q.subarray((b * Hq + s * per) * d, (b * Hq + (s + 1) * per) * d), b * per * d);
      return part;
    });
    const outs = qs.map((part) => new Uint16Array(part.length));
    const lses = qs.map(() => new Float32Array(3 * per));
    twin.engine.run(plan, 0, qs, outs, { lse: lses });
    for (let s = 0; s < 3; s++)
      for (let b = 0; b < 3; b++)
        expect(Array.from(lses[s]!.subarray(b * per, (b + 1) * per))).toEqual(
          Array.from(lse1.subarray(b * Hq + s * per, b * Hq + (s + 1) * per)),
        );
    expect(() => twin.engine.run(plan, 0, qs, outs, { lse: [lses[0]!] })).toThrow(/lse must be 3 per-shard/);
  });

  test("replicated heads (4 devices, 2 KV heads): each device runs its share of the group", () => {
    const random = rng(5);
    using twin = new Twin("cpu", 4, { ...SHAPE, numKvHeads: 2, numQoHeads: 8 });
    expect(twin.cache.heads.replicas).toBe(2);
    for (const n of [3, 40, 90]) twin.add(n, random);
    const r = twin.step([2, 0, 1], 0, random);
    expect(differing(r.out, r.out1)).toBe(0);
    expect(relativeError("f16", r.out, r.reference)).toBeLessThan(tolerance("f16"));
  });

  test("device buffers per shard, gathered onto one device, equal the host-array run", () => {
    const random = rng(11);
    using twin = new Twin("cpu", 2, SHAPE);
    for (const n of [20, 300, 45]) twin.add(n, random);
    const { srt, engine, cache } = twin;
    const plan = engine.plan(cache, twin.seqs);
    const { numQoHeads: Hq, headDim: d } = SHAPE;
    const q = randomHalves("f16", 3 * Hq * d, random);
    const whole = new Uint16Array(q.length);
    engine.run(plan, 1, q, whole);
    const partBytes = 3 * engine.qoHeadsPerShard * d * 2;
    const qs = [0, 1].map((s) => srt.allocDevice(s, partBytes));
    const outs = [0, 1].map((s) => srt.allocDevice(s, partBytes));
    for (let s = 0; s < 2; s++) {
      const part = new Uint16Array(partBytes / 2);
      for (let b = 0; b < 3; b++) part.set(q.subarray((b * Hq + s * 12) * d, (b * Hq + s * 12 + 12) * d), b * 12 * d);
      qs[s]!.write(part);
    }
    const into = srt.allocDevice(1, q.length * 2);
    engine.run(plan, 1, qs, outs, { gather: { into } });
    srt.synchronize();
    const gathered = new Uint16Array(q.length);
    into.read(gathered);
    expect(differing(gathered, whole)).toBe(0);
    expect(() => engine.run(plan, 1, qs, outs, { gather: { into }, streams: [undefined, undefined] })).toThrow(
      /gather orders its copies/,
    );
    // A part on the wrong shard is refused before any shard runs.
    expect(() => engine.run(plan, 1, [qs[1]!, qs[0]!], outs)).toThrow(/lives on shard 1, not 0/);
  });
});

describe("page moves act on every shard", () => {
  test("fork, copy-on-write, prefix cache and swap keep every shard equal to the one-device cache", () => {
    const random = rng(21);
    using twin = new Twin("cpu", 3, SHAPE);
    const prompt = Int32Array.from({ length: 40 }, (_, i) => 1000 + i);
    twin.add(40, random, prompt); // 2 full pages registered, a partial third
    twin.seqs.push(twin.cache.fork(twin.seqs[0]!));
    twin.seqs1.push(twin.one.fork(twin.seqs1[0]!));
    twin.grow(1, 5, random); // copy-on-write of the shared partial page, on every shard
    twin.cache.release(twin.seqs[0]!);
    twin.one.release(twin.seqs1[0]!);
    const hit = twin.add(
      45,
      random,
      Int32Array.from({ length: 45 }, (_, i) => 1000 + i),
    );
    expect(twin.seqs[hit]!.prefixHitTokens).toBe(32);
    twin.cache.swapOut(twin.seqs[1]!);
    twin.one.swapOut(twin.seqs1[1]!);
    twin.add(60, random); // takes pages the swapped sequence gave up
    twin.cache.swapIn(twin.seqs[1]!);
    twin.one.swapIn(twin.seqs1[1]!);
    expect(twin.cache.stats()).toEqual(twin.one.stats());
    for (const i of [1, 2, 3])
      for (let layer = 0; layer < SHAPE.numLayers; layer++) {
        const a = twin.cache.readKV(layer, twin.seqs[i]!),
          b = twin.one.readKV(layer, twin.seqs1[i]!);
        expect(differing(a.k, b.k) + differing(a.v, b.v)).toBe(0);
      }
    const r = twin.step([1, 2, 3], 1, random);
    expect(relativeError("f16", r.out, r.out1)).toBeLessThan(tolerance("f16"));
  });
});

describe("a failure on one shard rolls the others back", () => {
  // A shard whose native pool is smaller than the logical one: its calls fail where the others succeed.
  const skew = (shard: number, change: { numPages?: number; swapPages?: number }) => (s: number, config: Uint8Array) =>
    s === shard ? KV_CONFIG.encode({ ...KV_CONFIG.decoder(config)(), ...change }) : config;

  function everything(cache: ShardedKVCache, seqs: readonly Sequence[]) {
    return {
      stats: cache.stats(),
      snapshot: cache.snapshot(),
      pages: seqs.map((s) => (s.state === "released" ? null : cache.pagesOf(s))),
      kv: seqs.map((s) => (s.state === "live" ? [0, 1].map((layer) => cache.readKVShards(layer, s)) : s.state)),
    };
  }

  test("swap space exhausted on shard 2 only: swapOut fails, every shard keeps the sequence", () => {
    const random = rng(31);
    using twin = new Twin("cpu", 3, SHAPE, skew(2, { swapPages: 2 }));
    twin.add(70, random); // 5 pages: shard 2 has room for 2
    const before = everything(twin.cache, twin.seqs);
    expect(() => twin.cache.swapOut(twin.seqs[0]!)).toThrow(/shard 2/);
    expect(twin.seqs[0]!.state).toBe("live");
    expect(everything(twin.cache, twin.seqs)).toEqual(before);
    // The cache goes on working: a plan and a run equal the one-device stack's.
    const r = twin.step([0], 0, random);
    expect(differing(r.out, r.out1)).toBe(0);
  });

  test("copy-on-write into a page shard 1 lacks: append fails and changes no shard", () => {
    const random = rng(32);
    using twin = new Twin("cpu", 2, SHAPE, skew(1, { numPages: 4 }));
    twin.add(50, random); // pages 0..3, the last partial
    const child = twin.cache.fork(twin.seqs[0]!);
    const before = everything(twin.cache, [...twin.seqs, child]);
    expect(() => twin.cache.append(child, 1)).toThrow(/shard 1 \(device 1\): pkv_kvpool_copy_pages/);
    expect(everything(twin.cache, [...twin.seqs, child])).toEqual(before);
  });

  test("writeKV fails on shard 3: shards 0-2 get their previous K and V back", () => {
    const random = rng(33);
    using twin = new Twin("cpu", 4, SHAPE);
    twin.add(30, random);
    const { cache, srt } = twin;
    const before = everything(cache, twin.seqs);
    const slots = Int32Array.from({ length: 30 }, (_, i) => i); // pages 0 and 1: the sequence's own
    const E = 30 * cache.heads.kvHeadsPerShard * SHAPE.headDim;
    const parts = [0, 1, 2, 3].map((s) => {
      const b = srt.allocDevice(s, E * 2);
      b.write(randomHalves("f16", E, random));
      return b;
    });
    // A buffer the sharded runtime made on another shard is refused before anything is written...
    const misplaced = [parts[0]!, parts[1]!, parts[2]!, parts[0]!];
    expect(() => cache.writeKV(1, slots, misplaced, misplaced)).toThrow(/shard 3's part lives on shard 0/);
    expect(everything(cache, twin.seqs)).toEqual(before);
    // ...one made directly on shard 0's runtime is found by shard 3's native write, after shards 0-2 wrote.
    const foreign = srt.runtimes[0]!.allocDevice(E * 2);
    const wrong = [parts[0]!, parts[1]!, parts[2]!, foreign];
    expect(() => cache.writeKV(1, slots, wrong, wrong)).toThrow(/shard 3 .*another runtime/);
    expect(everything(cache, twin.seqs)).toEqual(before);
    // Without the saved copy the earlier shards keep the new values, as documented.
    expect(() => cache.writeKV(1, slots, wrong, wrong, { atomic: false })).toThrow(/shard 3/);
    expect(everything(cache, twin.seqs)).not.toEqual(before);
    cache.writeKV(1, slots, parts, parts); // and a full write succeeds again
  });

  test("a write beyond shard 1's pages fails there and leaves every shard as it was", () => {
    const random = rng(34);
    using twin = new Twin("cpu", 2, SHAPE, skew(1, { numPages: 2 }));
    twin.add(20, random); // pages 0 and 1
    const seq = twin.cache.createSequence();
    const slots = twin.cache.append(seq, 10); // page 2: beyond shard 1's pool
    const before = everything(twin.cache, twin.seqs);
    const E = 10 * SHAPE.numKvHeads * SHAPE.headDim;
    expect(() => twin.cache.writeKV(0, slots, randomHalves("f16", E, random), randomHalves("f16", E, random))).toThrow(
      OutOfRangeError,
    );
    expect(everything(twin.cache, twin.seqs)).toEqual(before);
  });
});

describe("one plan per step", () => {
  test("stale and foreign plans are refused before any shard runs", () => {
    const random = rng(41);
    using twin = new Twin("cpu", 2, SHAPE);
    twin.add(20, random);
    twin.add(40, random);
    const plan = twin.engine.plan(twin.cache, twin.seqs);
    const q = new Uint16Array(2 * SHAPE.numQoHeads * SHAPE.headDim);
    twin.cache.append(twin.seqs[0]!, 1);
    expect(() => twin.engine.run(plan, 0, q, new Uint16Array(q.length))).toThrow(StalePlanError);
    const newer = twin.engine.plan(twin.cache, twin.seqs);
    expect(() => twin.engine.run(plan, 0, q, new Uint16Array(q.length))).toThrow(/newer plan/);
    twin.engine.run(newer, 0, q, new Uint16Array(q.length));
    expect(() => twin.engine.plan(twin.one as unknown as ShardedKVCache, twin.seqs1)).toThrow(/not a sharded cache/);
    expect(newer.ids.length).toBe(2);
  });

  test("a copy that fails marks the plan's table entries dirty again, so the next plan sends them to every shard", () => {
    using rt = openRuntime({ backend: "cpu" });
    const shape = { numLayers: 1, numPages: 16, pageSize: 16, numKvHeads: 2, headDim: 64, dtype: "f16" as const };
    const cache = rt.createKVCache(shape);
    const engine = rt.createDecodeEngine({ numQoHeads: 4, cache });
    const other = rt.createDecodeEngine({ numQoHeads: 8, cache }); // plans differently (group 4)
    const seq = cache.createSequence();
    cache.append(seq, 40); // three pages of row 0
    const addresses = [new BigUint64Array(1), new BigUint64Array(1)] as const;
    native().pkv_kvpool_table_addresses(cache.poolHandle, addresses[0], addresses[1]);
    const dirty = new Int32Array(toArrayBuffer(Number(addresses[1][0]) as Pointer, 0, 4));
    expect(dirty[0]).toBe(0);
    engine.plan(cache, [seq]);
    expect(dirty[0]).toBe(3); // uploaded
    const info = new Int32Array(PLAN_INFO.size / 4);
    const status = native().pkv_decode_plan_copy(engine.handle, other.handle, cache.poolHandle, info);
    expect(status).toBe(Status.INVALID_ARGUMENT);
    expect(String(native().pkv_last_error())).toMatch(/plan differently/);
    expect(dirty[0]).toBe(0);
    engine.plan(cache, [seq]);
    expect(native().pkv_decode_plan_copy(engine.handle, 12345 as unknown as Pointer, cache.poolHandle, info)).toBe(
      Status.INVALID_HANDLE,
    );
    expect(dirty[0]).toBe(0);
  });

  test("plan cost per extra shard (measured, printed)", () => {
    const random = rng(51);
    for (const batch of [8, 64]) {
      for (const devices of [1, 2, 4]) {
        using twin = new Twin("cpu", devices, {
          ...SHAPE,
          numKvHeads: 8,
          numQoHeads: 32,
          numPages: 4096,
          maxBatch: 64,
        });
        for (let i = 0; i < batch; i++) twin.add(16 + Math.floor(random() * 900), () => 0.5);
        // Alternating rounds, median of each: the host is shared, so single runs are noisy.
        const leader = twin.engine.engines[0]!;
        const rounds: [number[], number[]] = [[], []];
        const plans = [() => leader.plan(twin.cache, twin.seqs), () => twin.engine.plan(twin.cache, twin.seqs)];
        for (let round = 0; round < 15; round++)
          plans.forEach((plan, i) => {
            const t0 = performance.now();
            for (let k = 0; k < 300; k++) plan();
            rounds[i]!.push(((performance.now() - t0) / 300) * 1000);
          });
        const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1]!;
        const [alone, sharded] = rounds.map(median) as [number, number];
        const extra = devices > 1 ? ((sharded - alone) / (devices - 1)).toFixed(2) : "-";
        console.log(
          `plan B${batch} x${devices}: shard 0 alone ${alone.toFixed(2)} us, all shards ${sharded.toFixed(2)} us, ` +
            `per extra shard ${extra} us (a planner run per shard would add ${alone.toFixed(2)} us each)`,
        );
      }
    }
  }, 60_000);
});
