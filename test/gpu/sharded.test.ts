// The cache and engine sharded by KV heads on several GPUs of one host: outputs equal the one-GPU stack's
// and the reference, peer-copy gathers, page moves and a rollback on every device. Needs 2 CUDA devices;
// skips with the reason otherwise, and fails instead when PKV_REQUIRE_GPUS=2 (or more) asks for them.
import { describe, expect, test } from "bun:test";
import { readEnv } from "../../lib/env.ts";
import { tolerance } from "../../lib/testing/index.ts";
import { randomHalves, rng } from "../../lib/testing/index.ts";
import { KV_CONFIG } from "../../lib/ffi/layouts.ts";
import { openRuntime, ShardedRuntime } from "../../lib/index.ts";
import { describeGpu, gpuCount } from "../support/gpu.ts";
import { differing, relativeError, Twin, type TwinShape } from "../support/sharded.ts";

const required = Number(readEnv("PKV_REQUIRE_GPUS") ?? "0");
const SHAPE: TwinShape = {
  numLayers: 2,
  numPages: 2048,
  pageSize: 16,
  numKvHeads: 8,
  numQoHeads: 32,
  headDim: 128,
  dtype: "f16",
  swapPages: 256,
};

function describeGpus(name: string, body: () => void): void {
  if (gpuCount >= 2) describe(name, body);
  else if (required >= 2)
    describe(name, () => {
      test(`${required} CUDA devices are visible (PKV_REQUIRE_GPUS=${required})`, () => {
        throw new Error(`PKV_REQUIRE_GPUS=${required} but ${gpuCount} CUDA device(s) are visible`);
      });
    });
  else describe.skip(`${name} [skipped: needs 2 CUDA devices, ${gpuCount} visible]`, body);
}

describeGpus("sharded over several GPUs", () => {
  const counts = [2, 4].filter((n) => n <= gpuCount);

  for (const devices of counts)
    test(`heads over ${devices} GPUs equal one GPU (within fp16 rounding; bit for bit where plans split alike) and the reference`, () => {
      const random = rng(600 + devices);
      using twin = new Twin("cuda", devices, SHAPE);
      expect(twin.srt.peerAccess).toBe(true);
      for (const n of [1, 16, 17, 300, 4000, 9000, 128, 33]) twin.add(n, random);
      for (let round = 0; round < 4; round++) {
        const which = [0, 1, 2, 3, 4, 5, 6, 7].slice(0, 2 + round * 2);
        const r = twin.step(which, round % 2, random);
        expect(relativeError("f16", r.out, r.reference)).toBeLessThan(tolerance("f16"));
        expect(relativeError("f16", r.out, r.out1)).toBeLessThan(tolerance("f16"));
        console.log(
          `x${devices} round ${round}: splits ${r.plan.leader.maxSplits} vs ${r.plan1.maxSplits}, ${differing(r.out, r.out1)} of ${r.out.length} outputs differ in bits`,
        );
        twin.grow(which[0]!, 5, random);
      }
    }, 120_000);

  test("per-device buffers, gathered by peer copies onto device 0 and onto device 1", () => {
    const random = rng(61);
    using twin = new Twin("cuda", 2, SHAPE);
    for (const n of [20, 3000, 450]) twin.add(n, random);
    const { srt, engine, cache } = twin;
    const plan = engine.plan(cache, twin.seqs);
    const { numQoHeads: Hq, headDim: d } = SHAPE;
    const per = engine.qoHeadsPerShard;
    const q = randomHalves("f16", 3 * Hq * d, random);
    const whole = new Uint16Array(q.length);
    engine.run(plan, 1, q, whole);
    const qs = [0, 1].map((s) => srt.allocDevice(s, 3 * per * d * 2));
    const outs = [0, 1].map((s) => srt.allocDevice(s, 3 * per * d * 2));
    for (let s = 0; s < 2; s++) {
      const part = new Uint16Array(3 * per * d);
      for (let b = 0; b < 3; b++)
        part.set(q.subarray((b * Hq + s * per) * d, (b * Hq + (s + 1) * per) * d), b * per * d);
      qs[s]!.write(part);
    }
    for (const target of [0, 1]) {
      const into = srt.allocDevice(target, q.length * 2);
      into.fill(0xff);
      engine.run(plan, 1, qs, outs, { gather: { into } });
      srt.synchronize();
      const gathered = new Uint16Array(q.length);
      into.read(gathered);
      expect(differing(gathered, whole)).toBe(0);
    }
  });

  test("fork, copy-on-write, prefix cache and swap on both GPUs; a swap that fails on GPU 1 rolls back GPU 0", () => {
    const random = rng(62);
    using twin = new Twin("cuda", 2, SHAPE);
    const prompt = Int32Array.from({ length: 100 }, (_, i) => 7 + i);
    twin.add(100, random, prompt);
    twin.seqs.push(twin.cache.fork(twin.seqs[0]!));
    twin.seqs1.push(twin.one.fork(twin.seqs1[0]!));
    twin.grow(1, 3, random);
    twin.cache.swapOut(twin.seqs[0]!);
    twin.one.swapOut(twin.seqs1[0]!);
    twin.add(500, random);
    twin.cache.swapIn(twin.seqs[0]!);
    twin.one.swapIn(twin.seqs1[0]!);
    for (const i of [0, 1, 2]) {
      const a = twin.cache.readKV(1, twin.seqs[i]!),
        b = twin.one.readKV(1, twin.seqs1[i]!);
      expect(differing(a.k, b.k) + differing(a.v, b.v)).toBe(0);
    }
    const skewed = (s: number, config: Uint8Array) =>
      s === 1 ? KV_CONFIG.encode({ ...KV_CONFIG.decoder(config)(), swapPages: 1 }) : config;
    using small = new Twin("cuda", 2, SHAPE, skewed);
    small.add(100, random);
    const before = small.cache.readKVShards(0, small.seqs[0]!);
    expect(() => small.cache.swapOut(small.seqs[0]!)).toThrow(/shard 1/);
    const after = small.cache.readKVShards(0, small.seqs[0]!);
    for (const s of [0, 1]) expect(differing(before[s]!.k, after[s]!.k) + differing(before[s]!.v, after[s]!.v)).toBe(0);
    expect(small.seqs[0]!.state).toBe("live");
  });
});

// Two shards on one GPU (two runtimes of device 0): every CUDA path of the sharded stack (plan copies,
// copies between runtimes, the rollback) runs on a one-GPU machine too; only the speed needs two GPUs.
describeGpu("sharded over two runtimes of one GPU", () => {
  const twoOnOne = () =>
    new ShardedRuntime("cuda", [0, 0], [openRuntime({ backend: "cuda" }), openRuntime({ backend: "cuda" })], true);

  test("outputs equal the one-runtime stack and the reference; a gather equals the host-array run", () => {
    const random = rng(70);
    using twin = new Twin("cuda", twoOnOne(), SHAPE);
    for (const n of [1, 16, 17, 300, 4000, 9000, 128, 33]) twin.add(n, random);
    for (let round = 0; round < 3; round++) {
      const r = twin.step([0, 1, 2, 3, 4, 5, 6, 7].slice(0, 3 + round * 2), round % 2, random);
      expect(relativeError("f16", r.out, r.reference)).toBeLessThan(tolerance("f16"));
      expect(relativeError("f16", r.out, r.out1)).toBeLessThan(tolerance("f16"));
      twin.grow(0, 3, random);
    }
    const { srt, engine, cache } = twin;
    const plan = engine.plan(cache, twin.seqs.slice(0, 3));
    const per = engine.qoHeadsPerShard * SHAPE.headDim;
    const q = randomHalves("f16", 3 * SHAPE.numQoHeads * SHAPE.headDim, random);
    const whole = new Uint16Array(q.length);
    engine.run(plan, 0, q, whole);
    const qs = [0, 1].map((s) => srt.allocDevice(s, 3 * per * 2));
    const outs = [0, 1].map((s) => srt.allocDevice(s, 3 * per * 2));
    for (let s = 0; s < 2; s++) {
      const part = new Uint16Array(3 * per);
      for (let b = 0; b < 3; b++) part.set(q.subarray((b * 2 + s) * per, (b * 2 + s + 1) * per), b * per);
      qs[s]!.write(part);
    }
    const into = srt.allocDevice(1, q.length * 2);
    engine.run(plan, 0, qs, outs, { gather: { into } });
    srt.synchronize();
    const gathered = new Uint16Array(q.length);
    into.read(gathered);
    expect(differing(gathered, whole)).toBe(0);
  }, 120_000);

  test("a swap that fails on shard 1 leaves both shards' K and V as they were", () => {
    const random = rng(71);
    const skewed = (s: number, config: Uint8Array) =>
      s === 1 ? KV_CONFIG.encode({ ...KV_CONFIG.decoder(config)(), swapPages: 1 }) : config;
    using twin = new Twin("cuda", twoOnOne(), SHAPE, skewed);
    twin.add(100, random);
    const before = twin.cache.readKVShards(0, twin.seqs[0]!);
    expect(() => twin.cache.swapOut(twin.seqs[0]!)).toThrow(/shard 1/);
    const after = twin.cache.readKVShards(0, twin.seqs[0]!);
    for (const s of [0, 1]) expect(differing(before[s]!.k, after[s]!.k) + differing(before[s]!.v, after[s]!.v)).toBe(0);
  });
});
