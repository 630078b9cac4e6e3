// Rows of several query tokens on the GPU against the CPU reference: speculative rows of up to 16 query
// rows on the decode kernels (claiming splits, the dynamic tail, causal edges, a graph capture), longer
// drafts and chunks of prefill on the multi-query kernels (wide tiles on the warpgroup kernel, narrow
// ones elsewhere), splits merged, every group size, head dims 64/128/256, page sizes 1-256, f16/bf16,
// page edges inside the new tokens, host arrays and device buffers.
import { afterAll, expect, test } from "bun:test";
import { DecodeEngine, type EngineSettings } from "../../lib/engine";
import { BadStateError } from "../../lib/errors";
import { openRuntime, type Runtime } from "../../lib/runtime";
import { POISON, tolerance } from "../../lib/testing/decode-check";
import {
  decodeKernelsTakeAll,
  type MultiqueryCase,
  outputError,
  poolReferenceMultiquery,
  runMultiqueryCase,
} from "../../lib/testing/multiquery-check";
import { randomHalves, rng, TestPool, type TestSequence } from "../../lib/testing/pool";
import { describeGpu } from "../support/gpu";

describeGpu("multi-query kernels on the GPU", () => {
  let rt: Runtime;
  const runtime = () => (rt ??= openRuntime({ backend: "cuda" }));
  afterAll(() => rt?.dispose());

  const check = (c: MultiqueryCase, device = false, settings?: EngineSettings) => {
    const r = runMultiqueryCase(runtime(), c, { device, settings, policy: settings ? "persistent" : undefined });
    const decodeOnly = decodeKernelsTakeAll(c) && settings?.math !== "cuda-cores";
    expect({ unwritten: r.unwritten, multiquery: r.kernel === "multiquery" }).toEqual({
      unwritten: 0,
      multiquery: !decodeOnly,
    });
    expect(r.relError).toBeLessThan(tolerance(c.dtype));
    expect(r.lseError).toBeLessThan(2e-3);
    return r;
  };

  test("speculative sizes 1, 2, 4, 8, 16 in one step (Llama shape), host arrays and device buffers", () => {
    const rows = [1, 2, 4, 8, 16, 1, 4].map((qLen, i) => ({ length: [33, 700, 5000, 129, 16, 1, 64][i]!, qLen }));
    for (const device of [false, true])
      check({ group: 4, numKvHeads: 8, headDim: 128, pageSize: 16, dtype: "f16", rows }, device);
  });
  test("speculative rows on the decode kernels: every group at its largest draft, 128K, claiming and the tail", () => {
    // Per group its largest draft (16 / group tokens) and one under it, over contexts whose last K/V tile
    // holds fewer tokens than the draft (an early query sees none of a late split's tokens).
    for (let group = 1; group <= 16; group++) {
      const most = Math.floor(16 / group);
      const c: MultiqueryCase = {
        group,
        numKvHeads: 2,
        headDim: group % 2 ? 128 : 64,
        pageSize: 2 ** (group % 9),
        dtype: group % 3 ? "f16" : "bf16",
        rows: [
          { length: 9 * 1024 + 2, qLen: most },
          { length: most, qLen: most },
          { length: 700, qLen: Math.max(1, most - 1) },
          { length: 1, qLen: 1 },
        ],
        seed: group,
      };
      check(c, group % 2 === 0);
    }
    // 128K tokens of a row and the few-row strategies forced on: claimed tiles, then the dynamic tail.
    const long: MultiqueryCase = {
      group: 4,
      numKvHeads: 1,
      headDim: 128,
      pageSize: 16,
      dtype: "bf16",
      rows: [
        { length: 131_072, qLen: 4 },
        { length: 20_003, qLen: 3 },
        { length: 64, qLen: 2 },
      ],
    };
    for (const settings of [undefined, { claimMinTiles: 1, tailPercent: 0 }, { tailPercent: 30, tailMinSplits: 0 }])
      expect(check(long, false, settings).maxSplits).toBeGreaterThan(1);
  }, 120_000);
  test("a plan of speculative rows only is captured into a graph and replays, also for the next plan", () => {
    const rt = runtime();
    const pool = new TestPool(rt, {
      numLayers: 1,
      numPages: 600,
      pageSize: 16,
      numKvHeads: 2,
      headDim: 128,
      dtype: "f16",
      maxSequences: 8,
      maxPagesPerSequence: 300,
    });
    const engine = new DecodeEngine(rt, { numQoHeads: 8, numKvHeads: 2, headDim: 128, pageSize: 16, dtype: "f16" });
    const width = 8 * 128,
      room = 12 * width; // query tokens of either step
    const qHost = randomHalves("f16", room, rng(5), 2);
    const q = rt.allocDevice(room * 2),
      out = rt.allocDevice(room * 2);
    q.write(qHost);
    const stream = rt.createStream();
    try {
      // The replay's output against the reference of the plan current at the replay.
      const expectReference = (seqs: TestSequence[], qLens: number[]) => {
        const tokens = qLens.reduce((a, b) => a + b, 0);
        const got = new Uint16Array(room).fill(POISON);
        out.write(got);
        graph.launch(stream);
        stream.synchronize();
        out.read(got);
        const ref = poolReferenceMultiquery(pool, 0, seqs, qLens, 8, qHost.subarray(0, tokens * width));
        expect(outputError("f16", got.subarray(0, tokens * width), ref.out).relError).toBeLessThan(tolerance("f16"));
      };
      const stepA = [pool.addSequence(4000), pool.addSequence(40), pool.addSequence(1700)];
      let plan = engine.plan(pool, stepA, { qLens: [4, 1, 3], policy: "persistent" });
      expect(plan.kernel).toBe("persistent");
      rt.synchronize();
      const graph = rt.capture(() => engine.run(plan, 0, q, out, undefined, { stream }), stream);
      expectReference(stepA, [4, 1, 3]);
      // The persistent kernel reads its tasks (and each row's queries) from the engine's one device image.
      const stepB = [pool.addSequence(2500), pool.addSequence(17), pool.addSequence(900), pool.addSequence(3)];
      plan = engine.plan(pool, stepB, { qLens: [2, 4, 4, 1], policy: "persistent" });
      rt.synchronize();
      expectReference(stepB, [2, 4, 4, 1]);
      graph.dispose();
    } finally {
      stream.dispose();
      q.dispose();
      out.dispose();
      engine.dispose();
      pool.dispose();
    }
  });
  test("a few rows over long contexts: split tasks merge by log-sum-exp", () => {
    const r = check({
      group: 4,
      numKvHeads: 2,
      headDim: 128,
      pageSize: 16,
      dtype: "bf16",
      rows: [
        { length: 30000, qLen: 4 },
        { length: 9000, qLen: 16 },
      ],
    });
    expect(r.maxSplits).toBeGreaterThan(1);
  });
  test("every group size 1-16 at its largest speculative tile and past it", () => {
    for (let group = 1; group <= 16; group++)
      check({
        group,
        numKvHeads: 1,
        headDim: 64,
        pageSize: 8,
        dtype: group % 2 ? "bf16" : "f16",
        rows: [
          { length: 70, qLen: Math.floor(64 / group) }, // one full tile of 64 query rows (or just under)
          { length: 300, qLen: Math.floor(64 / group) + 1 }, // one row into the next tile
          { length: 9, qLen: 1 },
        ],
        seed: group,
      });
  });
  test("head dims 64/128/256 x page sizes 1, 2, 32, 256; page edges inside the new tokens", () => {
    for (const headDim of [64, 128, 256])
      for (const pageSize of [1, 2, 32, 256])
        check({
          group: 4,
          numKvHeads: 2,
          headDim,
          pageSize,
          dtype: pageSize === 2 ? "bf16" : "f16",
          rows: [
            { length: 2 * pageSize + 7, qLen: 9 }, // the new tokens start before a page edge and cross it
            { length: 257, qLen: 3 },
            { length: 100, qLen: 100 }, // a whole prompt
          ],
        });
  });
  // The CPU reference of a 2048-token chunk takes seconds: a longer limit than bun's default 5 s.
  test("chunked prefill: chunks of 512 and 2048 tokens over 2K contexts, with decode rows", () => {
    check({
      group: 4,
      numKvHeads: 1,
      headDim: 128,
      pageSize: 16,
      dtype: "f16",
      rows: [
        { length: 2304, qLen: 2048 },
        { length: 2048, qLen: 512 },
        { length: 800, qLen: 1 },
      ],
    });
  }, 60_000);
  test("wide tiles (warpgroup kernel on Hopper): a chunk over 128K tokens, split; odd groups; one-token pages", () => {
    // 130 query rows: a full 128-row tile and a 2-row one, each split over the 128K context.
    const long = check({
      group: 1,
      numKvHeads: 1,
      headDim: 64,
      pageSize: 16,
      dtype: "bf16",
      rows: [
        { length: 131072, qLen: 130 },
        { length: 40, qLen: 1 },
      ],
    });
    expect(long.maxSplits).toBeGreaterThan(1);
    // Group 5: 25-token tiles (125 rows) whose causal edge falls inside a K/V tile; a 65-row chunk at
    // group 13 (5 tokens); pages of one token; a chunk from the start of a prompt.
    for (const [group, pageSize] of [
      [5, 1],
      [13, 32],
    ] as const)
      check({
        group,
        numKvHeads: 2,
        headDim: 128,
        pageSize,
        dtype: "f16",
        rows: [
          { length: 1000, qLen: 333 },
          { length: 77, qLen: 77 },
          { length: 600, qLen: 5 },
          { length: 9, qLen: 1 },
        ],
        seed: group,
      });
  }, 120_000);
  test("random mixes of query lengths 1..16 and a chunk up to 256", () => {
    // Sized so the CPU reference stays within seconds: one chunk per round, query heads x head dim <= 1024.
    const random = rng(17);
    for (let round = 0; round < 6; round++) {
      const rows = Array.from({ length: 1 + Math.floor(random() * 4) }, (_, i) => {
        const qLen = random() < 0.25 ? 1 : 1 + Math.floor(random() * (i === 0 ? 256 : 16));
        return { length: qLen + Math.floor(random() * 2000), qLen };
      });
      const headDim = [64, 128, 256][round % 3]!;
      const group = 1 + Math.floor(random() * Math.min(16, 1024 / headDim));
      check(
        {
          group,
          numKvHeads: Math.max(1, Math.min(2, Math.floor(1024 / headDim / group))),
          headDim,
          pageSize: 2 ** Math.floor(random() * 9),
          dtype: round % 2 ? "bf16" : "f16",
          rows,
          seed: 100 + round,
        },
        round % 2 === 1,
      );
    }
  });
  test("a mixed step on another stream equals the runtime stream's run; its capture is refused", () => {
    const rt = runtime();
    const pool = new TestPool(rt, {
      numLayers: 1,
      numPages: 64,
      pageSize: 16,
      numKvHeads: 2,
      headDim: 128,
      dtype: "f16",
      maxSequences: 3,
      maxPagesPerSequence: 20,
    });
    const engine = new DecodeEngine(rt, { numQoHeads: 8, numKvHeads: 2, headDim: 128, pageSize: 16, dtype: "f16" });
    try {
      const seqs = [pool.addSequence(300), pool.addSequence(40), pool.addSequence(17)];
      const plan = engine.plan(pool, seqs, { qLens: [5, 1, 17] });
      const n = plan.queryTokens * 8 * 128;
      const q = rt.allocDevice(n * 2),
        a = rt.allocDevice(n * 2),
        b = rt.allocDevice(n * 2);
      q.write(randomHalves("f16", n, rng(3), 2));
      engine.run(plan, 0, q, a);
      const stream = rt.createStream();
      engine.run(plan, 0, q, b, undefined, { stream });
      stream.synchronize();
      const x = new Uint16Array(n),
        y = new Uint16Array(n);
      a.read(x);
      b.read(y);
      expect(y).toEqual(x);
      expect(() => rt.capture(() => engine.run(plan, 0, q, b, undefined, { stream }), stream)).toThrow(BadStateError);
      stream.dispose();
      for (const buf of [q, a, b]) buf.dispose();
    } finally {
      engine.dispose();
      pool.dispose();
    }
  });
});
