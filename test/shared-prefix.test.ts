// Shared-prefix decode on the CPU backend (docs/shared-prefix.md): caches whose rows share pages through
// forks, forks of forks and prefix-cache hits, decoded with sharedPrefix "always", "auto" and "off" and
// checked against pkv_reference_decode; the plan's info; failures that leave the previous plan runnable.
import { describe, expect, test } from "bun:test";
import { BadStateError, InvalidArgumentError, Status } from "../lib/errors.ts";
import { PLAN_INFO } from "../lib/ffi/layouts.ts";
import { native } from "../lib/ffi/loader.ts";
import { openRuntime } from "../lib/index.ts";
import {
  buildTree,
  checkStep,
  expectClose,
  outputTolerance,
  runAndCompare,
  type Tree,
  type TreeCase,
} from "./support/shared-prefix.ts";
import type { Runtime } from "../lib/runtime.ts";
import { hostMemory, layeredBatch, layerError, wrapPool } from "./support/interop.ts";

const base: TreeCase = {
  group: 4,
  numKvHeads: 2,
  headDim: 64,
  pageSize: 16,
  dtype: "f16",
  seed: 1,
  groups: 2,
  maxPrefix: 200,
  prefixHits: 3,
  loners: 3,
};

// An engine over the tree's cache (group 4 over base's 2 KV heads) that shares every run it finds.
const alwaysEngine = (rt: Runtime, tree: Tree) =>
  rt.createDecodeEngine({
    cache: tree.cache,
    numQoHeads: 8,
    maxBatch: tree.sequences.length,
    settings: { sharedPrefix: "always" },
  });

describe("shared-prefix decode (CPU backend)", () => {
  const cases: TreeCase[] = [
    base,
    { ...base, seed: 2, pageSize: 1, maxPrefix: 40 },
    { ...base, seed: 3, pageSize: 64, maxPrefix: 700, group: 8 },
    { ...base, seed: 4, group: 1, numKvHeads: 3, headDim: 128, dtype: "bf16" },
    { ...base, seed: 5, groups: 3, prefixHits: 0, loners: 1, numLayers: 2 },
    { ...base, seed: 6, group: 8, headDim: 128, groups: 1, prefixHits: 5, loners: 0 },
  ];
  for (const c of cases)
    test(`random tree: seed ${c.seed}, page ${c.pageSize}, group ${c.group}, head dim ${c.headDim}, ${c.dtype}`, () => {
      using rt = openRuntime({ backend: "cpu" });
      const tree = buildTree(rt, c);
      using _cache = tree.cache;
      const always = checkStep(rt, c, tree, { sharedPrefix: "always" });
      const auto = checkStep(rt, c, tree, { sharedPrefix: "auto" });
      const off = checkStep(rt, c, tree, { sharedPrefix: "off" });
      for (const r of [always, auto, off]) expectClose(c, r);
      // Every tree has rows sharing at least a whole page and a token after it: "always" shares them.
      expect(always.plan.sharedTasks).toBeGreaterThan(0);
      expect(always.plan.sharedRows).toBeGreaterThanOrEqual(2);
      expect(always.plan.uniqueKvBytes).toBeLessThan(always.plan.kvBytes);
      expect(always.plan.kvBytes).toBe(off.plan.kvBytes);
      expect(always.plan.grid).toBeGreaterThan(off.plan.grid - 1);
      expect(off.plan.sharedTasks).toBe(0);
      expect(off.plan.sharedRows).toBe(0);
      expect(off.plan.uniqueKvBytes).toBe(off.plan.kvBytes);
      // These steps save far less than the policy's threshold: "auto" reads every row's pages itself.
      expect(auto.plan.sharedTasks).toBe(0);
    });

  test("rows that share nothing, and rows of one page or one token: no section", () => {
    using rt = openRuntime({ backend: "cpu" });
    const c: TreeCase = { ...base, groups: 0, prefixHits: 0, loners: 8, seed: 9 };
    const tree = buildTree(rt, c);
    using _cache = tree.cache;
    const r = checkStep(rt, c, tree, { sharedPrefix: "always" });
    expectClose(c, r);
    expect(r.plan.sharedTasks).toBe(0);
    // Two forks of a one-page sequence share its page but neither has a token past it: nothing to share.
    const root = tree.cache.createSequence();
    tree.cache.append(root, 16);
    const forks = [tree.cache.fork(root), tree.cache.fork(root)];
    using engine = rt.createDecodeEngine({ cache: tree.cache, numQoHeads: 8, settings: { sharedPrefix: "always" } });
    expect(engine.plan(tree.cache, forks).sharedTasks).toBe(0);
    tree.cache.append(forks[0]!, 1);
    tree.cache.append(forks[1]!, 1);
    expect(engine.plan(tree.cache, forks).sharedTasks).toBeGreaterThan(0);
  });

  test('"auto" shares a step that saves enough: 17 rows behind a 12K-token prefix', () => {
    using rt = openRuntime({ backend: "cpu" });
    const c: TreeCase = { ...base, group: 4, numKvHeads: 2, headDim: 128, pageSize: 64, seed: 11 };
    using cache = rt.createKVCache({
      numLayers: 1,
      numPages: 300,
      pageSize: 64,
      numKvHeads: 2,
      headDim: 128,
      dtype: "f16",
    });
    const root = cache.createSequence();
    const E = 2 * 128;
    const write = (slots: Int32Array) => {
      const values = new Uint16Array(slots.length * E);
      for (let i = 0; i < values.length; i++) values[i] = 0x3000 + ((i * 2654435761) >>> 22);
      cache.writeKV(
        0,
        slots,
        values,
        values.map((v) => v ^ 0x8000),
      );
    };
    write(cache.append(root, 12288));
    const sequences = Array.from({ length: 17 }, (_, i) => {
      const s = cache.fork(root);
      write(cache.append(s, 10 + 7 * i));
      return s;
    });
    const tree = { cache, sequences };
    using engine = rt.createDecodeEngine({ cache, numQoHeads: 8 });
    const plan = engine.plan(cache, sequences);
    // (17 - 1) x 12288 tokens x 2 heads x 512 bytes = 201 MB of repeated reads: AUTO's model expects
    // about 23 us shared against 31 us unshared (plan/shared_prefix.cpp).
    expect(plan.sharedTasks).toBeGreaterThan(0);
    expect(plan.sharedRows).toBe(17);
    expect(plan.kvBytes - plan.uniqueKvBytes).toBe(16 * 12288 * 2 * 512);
    expectClose(
      c,
      runAndCompare({ ...c, seed: 12 }, tree, (l, q, o, lse) => engine.run(plan, l, q, o, lse)),
    );
  }, 30_000); // the CPU reference over 17 x 12K tokens: 2.4 s alone, 5.1 s on a busy 2-core machine

  test('"auto" keeps the unshared plan where its fixed cost outweighs the repeats: 4 rows behind 2K', () => {
    using rt = openRuntime({ backend: "cpu" });
    using cache = rt.createKVCache({
      numLayers: 1,
      numPages: 64,
      pageSize: 64,
      numKvHeads: 2,
      headDim: 128,
      dtype: "f16",
    });
    const root = cache.createSequence();
    cache.append(root, 2048);
    const sequences = Array.from({ length: 4 }, () => {
      const s = cache.fork(root);
      cache.append(s, 5);
      return s;
    });
    const settings = (sharedPrefix: "auto" | "always") => ({ cache, numQoHeads: 8, settings: { sharedPrefix } });
    using auto = rt.createDecodeEngine(settings("auto"));
    using always = rt.createDecodeEngine(settings("always"));
    // 3 x 2048 tokens x 1 KiB of repeats = 6 MB: about 1 us of reads against the section's 15 us.
    expect(auto.plan(cache, sequences).sharedTasks).toBe(0);
    expect(always.plan(cache, sequences).sharedTasks).toBeGreaterThan(0);
  });

  test("runs without lse combine through the engine's own lse", () => {
    using rt = openRuntime({ backend: "cpu" });
    const tree = buildTree(rt, base);
    using _cache = tree.cache;
    using engine = alwaysEngine(rt, tree);
    const plan = engine.plan(tree.cache, tree.sequences);
    expect(plan.sharedTasks).toBeGreaterThan(0);
    const withLse = runAndCompare(base, tree, (l, q, o, lse) => engine.run(plan, l, q, o, lse));
    const without = runAndCompare(base, tree, (l, q, o, lse) => {
      engine.run(plan, l, q, o);
      lse.set(new Float32Array(lse.length)); // not compared: only out is
    });
    expectClose(base, withLse);
    expect(without.relError).toBeLessThan(outputTolerance(base.dtype));
  });

  test("a failed plan leaves the previous sharing plan runnable", () => {
    using rt = openRuntime({ backend: "cpu" });
    const tree = buildTree(rt, base);
    using _cache = tree.cache;
    using engine = alwaysEngine(rt, tree);
    const plan = engine.plan(tree.cache, tree.sequences);
    expect(plan.sharedTasks).toBeGreaterThan(0);
    const rows = new Int32Array(tree.sequences.length);
    const lens = new Int32Array(tree.sequences.length);
    tree.cache.describeBatch(tree.sequences, rows, lens);
    lens[lens.length - 1] = -5;
    const info = new Int32Array(PLAN_INFO.size / 4);
    expect(native().pkv_decode_plan(engine.handle, tree.cache.poolHandle, rows.length, rows, lens, -1, info)).toBe(
      Status.INVALID_ARGUMENT,
    );
    expectClose(
      base,
      runAndCompare(base, tree, (l, q, o, lse) => engine.run(plan, l, q, o, lse)),
    );
    // A later plan that shares nothing replaces it, and runs without the section.
    const loner = tree.cache.createSequence();
    tree.cache.append(loner, 5);
    const single = engine.plan(tree.cache, [loner]);
    expect(single.sharedTasks).toBe(0);
  });

  test("multi-query plans share nothing; a sharing plan is not copied", () => {
    using rt = openRuntime({ backend: "cpu" });
    const tree = buildTree(rt, base);
    using _cache = tree.cache;
    using engine = alwaysEngine(rt, tree);
    using other = alwaysEngine(rt, tree);
    const qLens = tree.sequences.map((s, i) => (i === 0 ? Math.min(2, s.length) : 1));
    const multi = engine.plan(tree.cache, tree.sequences, { qLens });
    if (qLens[0] === 2) expect(multi.sharedTasks).toBe(0);
    const plan = engine.plan(tree.cache, tree.sequences);
    expect(plan.sharedTasks).toBeGreaterThan(0);
    const info = new Int32Array(PLAN_INFO.size / 4);
    expect(native().pkv_decode_plan_copy(engine.handle, other.handle, tree.cache.poolHandle, info)).toBe(
      Status.BAD_STATE,
    );
    expect(String(native().pkv_last_error())).toMatch(/shared-prefix section/);
    expect(BadStateError).toBeDefined();
  });

  test("plans of a caller's page table (planPaged) share too", () => {
    using rt = openRuntime({ backend: "cpu" });
    const shape = { numQoHeads: 8, numKvHeads: 2, headDim: 64, pageSize: 16, dtype: "f16" as const };
    const lb = layeredBatch(shape, [40, 100, 3, 70], 2, 5);
    // Rows 1 and 3 begin with row 0's two full pages (a prefix the caller's own cache shares).
    const { pageIndptr: indptr, pageIndices: indices } = lb.batch;
    for (const row of [1, 3]) indices.set(indices.subarray(indptr[0]!, indptr[0]! + 2), indptr[row]!);
    const keep: unknown[] = [];
    using pool = wrapPool(rt, lb, (bytes) => hostMemory(bytes, keep));
    using engine = rt.createDecodeEngine({
      cache: pool,
      numQoHeads: 8,
      maxBatch: 4,
      settings: { sharedPrefix: "always" },
    });
    const plan = engine.planPaged(pool, { indptr, indices, lastPageLen: lb.lastPageLen });
    expect(plan.sharedTasks).toBeGreaterThan(0);
    expect(plan.sharedRows).toBe(3);
    for (let layer = 0; layer < 2; layer++) {
      const out = new Uint16Array(lb.batch.q.length).fill(0x7fff);
      engine.run(plan, layer, lb.batch.q, out);
      expect(layerError(lb, layer, out)).toBeLessThan(outputTolerance("f16"));
    }
  });

  test("settings: read back, and bad values get typed errors", () => {
    using rt = openRuntime({ backend: "cpu" });
    const shape = { numQoHeads: 4, numKvHeads: 2, headDim: 64, pageSize: 16, dtype: "f16" as const };
    for (const mode of ["auto", "off", "always"] as const) {
      using engine = rt.createDecodeEngine({ ...shape, settings: { sharedPrefix: mode } });
      expect(engine.settings.sharedPrefix).toBe(mode);
    }
    expect(() => rt.createDecodeEngine({ ...shape, settings: { sharedPrefix: "sometimes" as "auto" } })).toThrow(
      InvalidArgumentError,
    );
    expect(() => rt.createDecodeEngine({ ...shape, settings: { sharedPrefix: 2 as unknown as "auto" } })).toThrow(
      InvalidArgumentError,
    );
    const settings = new Int32Array(8);
    native().pkv_engine_settings_defaults(settings);
    expect(settings[7]).toBe(0); // AUTO
    settings[7] = 3;
    const config = new Int32Array([4, 2, 64, 16, 0, 2, 8, 0]);
    const out = new BigUint64Array(1);
    expect(native().pkv_decode_engine_create_with(rt.handle, config, null, settings, out)).toBe(
      Status.INVALID_ARGUMENT,
    );
    expect(String(native().pkv_last_error())).toMatch(/shared_prefix 3/);
  });
});
