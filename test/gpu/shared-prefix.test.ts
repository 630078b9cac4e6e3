// Shared-prefix decode on the GPU against the CPU reference: random trees of forks and prefix hits with
// sharedPrefix "always", "auto" and "off" (host arrays and device buffers), 128K-token shared prefixes,
// prefixes ending on and beside page and split boundaries, and one CUDA graph captured over a sharing
// plan and replayed over a second, different sharing plan.
import { afterAll, expect, test } from "bun:test";
import type { DecodeEngine, Plan } from "../../lib/engine";
import type { KVCache, Sequence } from "../../lib/kvcache";
import { openRuntime, type Runtime } from "../../lib/runtime";
import { randomHalves, rng } from "../../lib/testing/pool";
import { describeGpu } from "../support/gpu";
import { buildTree, checkStep, expectClose, runAndCompare, type Tree, type TreeCase } from "../support/shared-prefix";

const base: TreeCase = {
  group: 4,
  numKvHeads: 8,
  headDim: 128,
  pageSize: 16,
  dtype: "f16",
  seed: 1,
  groups: 3,
  maxPrefix: 3000,
  prefixHits: 4,
  loners: 4,
};

describeGpu("shared-prefix decode on the GPU", () => {
  let rt: Runtime;
  const runtime = () => (rt ??= openRuntime({ backend: "cuda" }));
  afterAll(() => rt?.dispose());

  // The step with device buffers for q, out and lse (the path a serving loop and a graph take).
  const deviceRun = (engine: DecodeEngine, plan: Plan, c: TreeCase, rows: number) => {
    const r = runtime();
    const n = rows * c.group * c.numKvHeads * c.headDim;
    const qb = r.allocDevice(n * 2);
    const ob = r.allocDevice(n * 2);
    const lb = r.allocDevice((n / c.headDim) * 4);
    return {
      run: (layer: number, q: Uint16Array, out: Uint16Array, lse: Float32Array) => {
        qb.write(q);
        engine.run(plan, layer, qb, ob, lb);
        ob.read(out);
        lb.read(lse);
      },
      dispose: () => [qb, ob, lb].forEach((b) => b.dispose()),
    };
  };

  const cases: TreeCase[] = [
    base,
    { ...base, seed: 2, pageSize: 1, maxPrefix: 700, group: 8, numKvHeads: 2 },
    { ...base, seed: 3, pageSize: 64, maxPrefix: 9000, dtype: "bf16", headDim: 64 },
    { ...base, seed: 4, group: 1, numKvHeads: 4, groups: 5, prefixHits: 0, numLayers: 2 },
    { ...base, seed: 5, group: 16, numKvHeads: 1, headDim: 64, loners: 0 },
  ];
  for (const c of cases)
    test(`random tree: seed ${c.seed}, page ${c.pageSize}, group ${c.group}, head dim ${c.headDim}, ${c.dtype}`, () => {
      const r = runtime();
      const tree = buildTree(r, c);
      using _cache = tree.cache;
      const always = checkStep(r, c, tree, { sharedPrefix: "always" });
      const auto = checkStep(r, c, tree, { sharedPrefix: "auto" });
      const off = checkStep(r, c, tree, { sharedPrefix: "off" });
      for (const s of [always, auto, off]) expectClose(c, s);
      expect(always.plan.sharedTasks).toBeGreaterThan(0);
      expect(always.plan.uniqueKvBytes).toBeLessThan(always.plan.kvBytes);
      expect(off.plan.sharedTasks).toBe(0);
      // Device buffers, on a plan that shares.
      using engine = r.createDecodeEngine({
        cache: tree.cache,
        numQoHeads: c.group * c.numKvHeads,
        maxBatch: tree.sequences.length,
        settings: { sharedPrefix: "always" },
      });
      const plan = engine.plan(tree.cache, tree.sequences);
      const io = deviceRun(engine, plan, c, tree.sequences.length);
      expectClose(c, runAndCompare({ ...c, seed: c.seed + 100 }, tree, io.run));
      io.dispose();
    }, 300_000);

  // Forks of one root of `prefix` tokens, each with its own tokens (lengths), rows of `c`'s shape.
  // spare: room for later sequences of the test (rows, and tokens of their pages).
  const forks = (c: TreeCase, prefix: number, own: number[], spare = { rows: 0, tokens: 0 }): Tree => {
    const r = runtime();
    const P = c.pageSize;
    const pages =
      Math.ceil(prefix / P) +
      own.reduce((n, len) => n + Math.ceil(len / P) + 1, 0) +
      8 +
      Math.ceil(spare.tokens / P) +
      spare.rows;
    const cache: KVCache = r.createKVCache({
      numLayers: 1,
      numPages: pages,
      pageSize: P,
      numKvHeads: c.numKvHeads,
      headDim: c.headDim,
      dtype: c.dtype,
      maxSequences: own.length + 1 + spare.rows,
      maxPagesPerSequence: Math.ceil((prefix + Math.max(...own)) / P) + 1,
    });
    const random = rng(c.seed);
    const E = c.numKvHeads * c.headDim;
    const write = (slots: Int32Array) =>
      cache.writeKV(
        0,
        slots,
        randomHalves(c.dtype, slots.length * E, random),
        randomHalves(c.dtype, slots.length * E, random),
      );
    const root = cache.createSequence();
    for (let done = 0; done < prefix; done += 8192) write(cache.append(root, Math.min(8192, prefix - done)));
    const sequences: Sequence[] = own.map((len) => {
      const s = cache.fork(root);
      if (len > 0) write(cache.append(s, len));
      return s;
    });
    return { cache, sequences };
  };

  test("128K-token shared prefixes: 8 forks with 1..600 own tokens, under always and auto", () => {
    const c: TreeCase = { ...base, numKvHeads: 2, seed: 21 };
    const tree = forks(c, 131072 + 5, [1, 7, 64, 100, 255, 256, 513, 600]);
    using _cache = tree.cache;
    for (const mode of ["always", "auto"] as const) {
      const s = checkStep(runtime(), c, tree, { sharedPrefix: mode });
      expectClose(c, s);
      // (8 - 1) x 128K tokens x 2 heads x 512 bytes: far over the policy's threshold.
      expect(s.plan.sharedTasks).toBeGreaterThan(0);
      expect(s.plan.sharedRows).toBe(8);
    }
  }, 600_000);

  test("prefixes ending on and beside page and split boundaries", () => {
    for (const pageSize of [16, 64])
      for (const prefix of [pageSize, 511, 512, 513, 4095, 4096, 4097, 40000]) {
        const c: TreeCase = { ...base, pageSize, numKvHeads: 2, seed: prefix + pageSize };
        const tree = forks(c, prefix, [0, 1, 2, 17, pageSize]);
        using _cache = tree.cache;
        const s = checkStep(runtime(), c, tree, { sharedPrefix: "always" });
        expectClose(c, s);
        if (prefix > pageSize) expect(s.plan.sharedTasks).toBeGreaterThan(0);
      }
  }, 600_000);

  test("a CUDA graph captured over one sharing plan replays a second, different one", () => {
    const r = runtime();
    const c: TreeCase = { ...base, numKvHeads: 2, seed: 31 };
    const a = forks(c, 5000, [3, 40, 900, 1, 77, 300], { rows: 4, tokens: 2100 + 700 + 5 + 9 });
    using _a = a.cache;
    using engine = r.createDecodeEngine({
      cache: a.cache,
      numQoHeads: 8,
      maxBatch: 8,
      policy: "persistent", // its grid is fixed, so one captured launch serves later plans
      settings: { sharedPrefix: "always" },
    });
    const stream = r.createStream();
    const n = 8 * 8 * 128;
    const qb = r.allocDevice(n * 2);
    const ob = r.allocDevice(n * 2);
    const lb = r.allocDevice((n / 128) * 4);
    let plan = engine.plan(a.cache, a.sequences);
    expect(plan.sharedTasks).toBeGreaterThan(0);
    r.synchronize();
    const graph = r.capture(() => engine.run(plan, 0, qb, ob, lb, { stream }), stream);
    const replay = (rows: number) => (_layer: number, q: Uint16Array, out: Uint16Array, lse: Float32Array) => {
      qb.write(q);
      graph.launch(stream);
      stream.synchronize();
      ob.read(out);
      lb.read(lse);
      expect(out.length).toBe(rows * 8 * 128);
    };
    expectClose(c, runAndCompare(c, a, replay(a.sequences.length)));
    // Another tree on the same cache: other rows, another prefix, a fork of a fork.
    const root = a.cache.createSequence();
    const random = rng(32);
    const write = (slots: Int32Array) =>
      a.cache.writeKV(
        0,
        slots,
        randomHalves("f16", slots.length * 256, random),
        randomHalves("f16", slots.length * 256, random),
      );
    write(a.cache.append(root, 2100));
    const child = a.cache.fork(root);
    write(a.cache.append(child, 700));
    const rows = [child, a.cache.fork(child), a.cache.fork(root), root, a.sequences[2]!];
    write(a.cache.append(rows[1]!, 5));
    write(a.cache.append(rows[2]!, 9));
    const b: Tree = { cache: a.cache, sequences: rows };
    plan = engine.plan(a.cache, rows);
    expect(plan.sharedTasks).toBeGreaterThan(0);
    r.synchronize(); // the upload is on the runtime's stream; the graph replays on another
    expectClose(c, runAndCompare({ ...c, seed: 33 }, b, replay(rows.length)));
    graph.dispose();
    for (const x of [qb, ob, lb]) x.dispose();
    stream.dispose();
  }, 300_000);
});
