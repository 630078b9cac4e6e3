// Decode kernels on the GPU against the reference: both kernels, host arrays and device buffers, another
// stream, a captured 32-layer step replayed (also after a new plan), and the errors of the CUDA path.
import { afterAll, expect, test } from "bun:test";
import { decode } from "../../lib/dtype";
import { DecodeEngine } from "../../lib/engine";
import { StalePlanError } from "../../lib/errors";
import type { Graph } from "../../lib/graphs";
import { openRuntime, type Runtime } from "../../lib/runtime";
import type { Stream } from "../../lib/streams";
import { POISON, type DecodeCase, runCase, tolerance } from "../../lib/testing/decode-check";
import { describeGpu } from "../support/gpu";
import { randomHalves, rng, TestPool } from "../../lib/testing/pool";

describeGpu("decode kernels on the GPU", () => {
  let rt: Runtime;
  const runtime = () => (rt ??= openRuntime({ backend: "cuda" }));
  afterAll(() => rt?.dispose());

  const check = (c: DecodeCase, device = false) => {
    for (const r of runCase(runtime(), c, ["baseline", "persistent"], device)) {
      expect({ policy: r.policy, unwritten: r.unwritten }).toEqual({ policy: r.policy, unwritten: 0 });
      expect(r.relError).toBeLessThan(tolerance(c.dtype));
      expect(r.lseError).toBeLessThan(2e-3);
    }
  };

  // One step's q and out device buffers for every layer (q random, out poisoned by poison()), and
  // verify(seqs): every layer's output against the reference for those sequences.
  const layerIo = (pool: TestPool, layers: number, rows: number, hq: number, d: number, seed: number) => {
    const rt = runtime();
    const n = rows * hq * d;
    const random = rng(seed);
    const qs = Array.from({ length: layers }, () => randomHalves("f16", n, random, 2));
    const qb = qs.map((q) => {
      const b = rt.allocDevice(n * 2);
      b.write(q);
      return b;
    });
    const ob = qs.map(() => rt.allocDevice(n * 2));
    return {
      qb,
      ob,
      poison: () => ob.forEach((b) => b.write(new Uint16Array(n).fill(POISON))),
      verify: (seqs: ReturnType<typeof pool.addSequence>[]) => {
        const used = seqs.length * hq * d;
        for (let layer = 0; layer < layers; layer++) {
          const out = new Uint16Array(n);
          ob[layer]!.read(out);
          const ref = pool.reference(layer, seqs, hq, qs[layer]!.subarray(0, used));
          const got = decode("f16", out.subarray(0, used)),
            want = decode("f16", ref.out);
          let diff = 0,
            norm = 0;
          for (let i = 0; i < used; i++) {
            diff += (got[i]! - want[i]!) ** 2;
            norm += want[i]! ** 2;
          }
          expect(Math.sqrt(diff / norm)).toBeLessThan(tolerance("f16"));
        }
      },
      dispose: () => [...qb, ...ob].forEach((b) => b.dispose()),
    };
  };

  test("Llama shape (g4, d128, page 16, f16), host arrays and device buffers", () => {
    const c: DecodeCase = {
      group: 4,
      numKvHeads: 8,
      headDim: 128,
      pageSize: 16,
      dtype: "f16",
      lengths: [1, 15, 16, 17, 4000, 30000],
    };
    check(c);
    check(c, true);
  }, 120_000);
  test("odd group sizes, bf16, head dims 64 and 256, page sizes 1 and 256", () => {
    check({ group: 7, numKvHeads: 2, headDim: 64, pageSize: 1, dtype: "bf16", lengths: [1, 33, 2000] });
    check({ group: 13, numKvHeads: 1, headDim: 256, pageSize: 256, dtype: "f16", lengths: [255, 256, 257, 9000] });
    check({
      group: 1,
      numKvHeads: 4,
      headDim: 128,
      pageSize: 64,
      dtype: "bf16",
      lengths: [64, 65, 7000],
      numLayers: 2,
    });
  }, 120_000);

  // A persistent-policy step of the Llama shape (g 4, 2 KV heads, d 128, page 16, f16) for up to 4 rows:
  // the pool, the engine, per-layer q/out buffers (layerIo), running every layer of a plan, and two
  // replays of a captured step checked against the reference.
  const persistentStep = (
    layers: number,
    numPages: number,
    maxSequences: number,
    maxPagesPerSequence: number,
    seed: number,
  ) => {
    const rt = runtime();
    const g = 4,
      hkv = 2,
      d = 128,
      hq = g * hkv;
    const pool = new TestPool(rt, {
      numLayers: layers,
      numPages,
      pageSize: 16,
      numKvHeads: hkv,
      headDim: d,
      dtype: "f16",
      maxSequences,
      maxPagesPerSequence,
    });
    const engine = new DecodeEngine(rt, {
      numQoHeads: hq,
      numKvHeads: hkv,
      headDim: d,
      pageSize: 16,
      dtype: "f16",
      policy: "persistent",
      maxBatch: 4,
    });
    const io = layerIo(pool, layers, 4, hq, d, seed);
    const runLayers = (plan: ReturnType<typeof engine.plan>, stream?: Stream) => {
      for (let layer = 0; layer < layers; layer++)
        engine.run(plan, layer, io.qb[layer]!, io.ob[layer]!, undefined, stream && { stream });
    };
    const replayTwice = (graph: Graph, stream: Stream, seqs: ReturnType<typeof pool.addSequence>[]) => {
      for (let replay = 0; replay < 2; replay++) {
        io.poison();
        graph.launch(stream);
        stream.synchronize();
        io.verify(seqs);
      }
    };
    return {
      rt,
      pool,
      engine,
      io,
      runLayers,
      replayTwice,
      dispose: () => {
        io.dispose();
        engine.dispose();
        pool.dispose();
      },
    };
  };

  test("claiming rows (a medium few-row step): every layer and every graph replay starts from clean cursors", () => {
    // 1106 tiles of 64 tokens x 2 KV heads: over 8 tiles per block of the H100's 264-block wave and under the
    // dynamic tail's size, so the persistent plan claims. Each layer's launch, and each replay, must find
    // the cursors, slot and merge counts the previous one left at zero.
    const { rt, pool, engine, io, runLayers, replayTwice, dispose } = persistentStep(4, 4500, 4, 2500, 5);
    const seqs = [pool.addSequence(40000), pool.addSequence(30000), pool.addSequence(700), pool.addSequence(1)];
    const plan = engine.plan(pool, seqs);
    expect(plan.maxSplits).toBeGreaterThan(1);
    for (let round = 0; round < 2; round++) {
      io.poison();
      runLayers(plan);
      rt.synchronize();
      io.verify(seqs);
    }
    const stream = rt.createStream();
    rt.synchronize();
    const graph = rt.capture(() => runLayers(plan, stream), stream);
    replayTwice(graph, stream, seqs);
    graph.dispose();
    stream.dispose();
    dispose();
  }, 120_000);

  test("a run on another stream waits for its plan; a captured 32-layer step replays, also for a new plan", () => {
    const { rt, pool, engine, io, runLayers, replayTwice, dispose } = persistentStep(32, 700, 8, 300, 3);
    const stream = rt.createStream();

    const stepA = [pool.addSequence(3000), pool.addSequence(40), pool.addSequence(900), pool.addSequence(1)];
    let plan = engine.plan(pool, stepA);
    io.poison();
    runLayers(plan, stream);
    stream.synchronize();
    io.verify(stepA);

    const graph = rt.capture(() => runLayers(plan, stream), stream);
    replayTwice(graph, stream, stepA);
    // The persistent kernel reads its task count and tasks from the engine's one device plan image, so the
    // same graph serves the next step's plan (same or smaller batch).
    const stepB = [pool.addSequence(4100), pool.addSequence(17), pool.addSequence(2500)];
    plan = engine.plan(pool, stepB);
    rt.synchronize(); // the upload is on the runtime's stream; the graph replays on another
    io.poison();
    graph.launch(stream);
    stream.synchronize();
    io.verify(stepB);
    expect(() => engine.run({ ...plan, id: plan.id - 1 } as typeof plan, 0, io.qb[0]!, io.ob[0]!)).toThrow(
      StalePlanError,
    );

    graph.dispose();
    stream.dispose();
    dispose();
  }, 120_000);
});
