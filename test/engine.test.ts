// Decode engine on the CPU backend: the planner's splits, the merge and the ABI's errors, against the
// reference. The CPU backend executes the very task list the GPU kernels would.
import { afterAll, describe, expect, test } from "bun:test";
import { DecodeEngine, type EngineSettings } from "../lib/engine";
import { InvalidArgumentError, OutOfRangeError, StalePlanError, UnsupportedError, BadStateError } from "../lib/errors";
import { check, outPointer } from "../lib/ffi/call";
import { PLAN_INFO } from "../lib/ffi/layouts";
import { native } from "../lib/ffi/loader";
import { openRuntime } from "../lib/runtime";
import { type CaseResult, type DecodeCase, runCase, tolerance } from "../lib/testing/decode-check";
import { TestPool } from "../lib/testing/pool";

const rt = openRuntime({ backend: "cpu" });
afterAll(() => rt.dispose());

function expectClose(c: DecodeCase, device = false) {
  for (const r of runCase(rt, c, ["baseline", "persistent"], device)) {
    expect({ policy: r.policy, unwritten: r.unwritten }).toEqual({ policy: r.policy, unwritten: 0 });
    expect(r.relError).toBeLessThan(tolerance(c.dtype));
    expect(r.lseError).toBeLessThan(1e-3);
  }
}

describe("decode engine (CPU backend) matches the reference", () => {
  test("Llama shape: g4, d128, page 16, f16, lengths at page edges", () => {
    expectClose({
      group: 4,
      numKvHeads: 2,
      headDim: 128,
      pageSize: 16,
      dtype: "f16",
      lengths: [1, 15, 16, 17, 33, 700],
    });
  });
  test("odd groups 3, 7 and the extremes 1, 16; bf16", () => {
    for (const group of [1, 3, 7, 16])
      expectClose({ group, numKvHeads: 1, headDim: 64, pageSize: 8, dtype: "bf16", lengths: [5, 129, 300] });
  });
  test("head dim 256, page size 1 and 256", () => {
    expectClose({ group: 2, numKvHeads: 2, headDim: 256, pageSize: 1, dtype: "f16", lengths: [1, 2, 90] });
    expectClose({
      group: 2,
      numKvHeads: 1,
      headDim: 64,
      pageSize: 256,
      dtype: "bf16",
      lengths: [1, 255, 256, 257, 600],
    });
  });
  test("several layers read their own pages", () => {
    expectClose({ group: 4, numKvHeads: 1, headDim: 64, pageSize: 16, dtype: "f16", lengths: [40, 77], numLayers: 3 });
  });
  test("device-buffer runs equal host-array runs", () => {
    expectClose({ group: 4, numKvHeads: 2, headDim: 64, pageSize: 16, dtype: "f16", lengths: [3, 500] }, true);
  });
});

describe("planner", () => {
  test("a single long row is split for both kernels, and splits merge exactly", () => {
    const [base, pers] = runCase(rt, {
      group: 4,
      numKvHeads: 8,
      headDim: 64,
      pageSize: 16,
      dtype: "f16",
      lengths: [20000],
    });
    expect(base!.maxSplits).toBeGreaterThan(1);
    expect(pers!.maxSplits).toBeGreaterThan(1);
    // Persistent splits are page-balanced: tasks ~ one wave, never shorter than 64 tokens.
    expect(pers!.numTasks).toBeLessThanOrEqual(396 + 8);
    expect(pers!.numTasks).toBeGreaterThanOrEqual(8 * Math.floor(20000 / 64 / 50));
    for (const r of [base!, pers!]) expect(r.relError).toBeLessThan(tolerance("f16"));
  });
  test("claiming splits (a long few-row step) share each row's tiles and merge exactly", () => {
    // 826 tiles of 64 tokens x 4 heads: over 8 tiles per block of the CPU's 396-block wave, so the
    // persistent plan claims; rows of 1 and 17 tokens stay single tasks, the 700-token row gets helpers.
    const c: DecodeCase = {
      group: 2,
      numKvHeads: 4,
      headDim: 128,
      pageSize: 16,
      dtype: "f16",
      lengths: [1, 17, 700, 20000, 32000],
    };
    const [pers] = runCase(rt, c, ["persistent"]);
    expect(pers!.maxSplits).toBeGreaterThan(1);
    expectClose(c);
  });
  test("the dynamic tail (forced on a small step): even and shrinking pieces both cover every tile once", () => {
    const c: DecodeCase = {
      group: 4,
      numKvHeads: 2,
      headDim: 64,
      pageSize: 16,
      dtype: "f16",
      lengths: [1, 17, 700, 20000, 32000],
    };
    const run = (tailEndTiles: number): CaseResult =>
      runCase(rt, { ...c, settings: { tailMinSplits: 0, tailEndTiles } }, ["persistent"])[0]!;
    const even = run(0),
      shrinking = run(1);
    // Shrinking pieces down to one tile: more tasks than the even pieces of the same tail.
    expect(shrinking.numTasks).toBeGreaterThan(even.numTasks);
    for (const r of [even, shrinking]) {
      expect(r.unwritten).toBe(0);
      expect(r.relError).toBeLessThan(tolerance("f16"));
      expect(r.lseError).toBeLessThan(1e-3);
    }
  });
  test("a large batch is not split by the baseline (one task per row and head)", () => {
    const lengths = Array.from({ length: 120 }, (_, i) => 1 + ((i * 37) % 90));
    const [base] = runCase(rt, { group: 1, numKvHeads: 4, headDim: 64, pageSize: 16, dtype: "f16", lengths }, [
      "baseline",
    ]);
    expect(base!.numTasks).toBe(120 * 4);
    expect(base!.maxSplits).toBe(1);
    expect(base!.relError).toBeLessThan(tolerance("f16"));
  });
  test("adaptive picks persistent for many rows or a long skewed step, baseline otherwise", () => {
    const pool = new TestPool(rt, {
      numLayers: 1,
      numPages: 8700,
      pageSize: 16,
      numKvHeads: 1,
      headDim: 64,
      dtype: "f16",
      maxSequences: 256,
      maxPagesPerSequence: 4200,
    });
    const engine = new DecodeEngine(rt, { numQoHeads: 4, numKvHeads: 1, headDim: 64, pageSize: 16, dtype: "f16" });
    const short = pool.addSequence(100),
      long = pool.addSequence(66000),
      even = pool.addSequence(66000);
    expect(engine.plan(pool, [short]).kernel).toBe("baseline");
    expect(engine.plan(pool, [long, even]).kernel).toBe("baseline"); // even rows
    const short2 = pool.addSequence(300);
    expect(engine.plan(pool, [short, short2, long]).kernel).toBe("persistent"); // skewed and long
    const many = Array.from({ length: 200 }, () => pool.addSequence(10)); // 200 rows >= half of the 396 wave
    expect(engine.plan(pool, many).kernel).toBe("persistent");
    engine.dispose();
    pool.dispose();
  });
});

describe("engine settings", () => {
  const shape = { numQoHeads: 4, numKvHeads: 2, pageSize: 16, dtype: "f16" as const };
  test("defaults, with auto resolved to what runs on this backend", () => {
    using engine = new DecodeEngine(rt, { ...shape, headDim: 128 });
    expect(engine.settings).toEqual({
      math: "tensor-cores",
      loader: "cp-async",
      tailPercent: 10,
      tailMinSplits: 32,
      tailEndTiles: 2,
      claimMinTiles: 8,
      sharedPrefix: "auto",
    });
    using wide = new DecodeEngine(rt, { ...shape, headDim: 256 });
    expect(wide.settings.math).toBe("cuda-cores");
  });
  test("given settings are kept, and change the plan as they say", () => {
    // The claiming test's step: 826 tiles of 64 tokens x 4 heads, over 8 tiles per block of the 396 wave.
    const lengths = [1, 17, 700, 20000, 32000];
    const pool = new TestPool(
      rt,
      {
        numLayers: 1,
        numPages: 3400,
        pageSize: 16,
        numKvHeads: 4,
        headDim: 128,
        dtype: "f16",
        maxSequences: 5,
        maxPagesPerSequence: 2000,
      },
      1,
      false,
    ); // plans only: no host copy of the pages
    const sequences = lengths.map((len) => pool.addSequence(len));
    const plan = (settings: EngineSettings) => {
      using engine = new DecodeEngine(rt, {
        numQoHeads: 8,
        numKvHeads: 4,
        headDim: 128,
        pageSize: 16,
        dtype: "f16",
        settings,
      });
      const p = engine.plan(pool, sequences, { policy: "persistent" });
      return { tasks: p.numTasks, splits: p.maxSplits };
    };
    const claiming = plan({}),
      even = plan({ claimMinTiles: 0 }),
      tail = plan({ tailMinSplits: 0 });
    // Claiming adds helpers to the long rows past their workers; the single even wave has none.
    expect(claiming.tasks).toBeGreaterThan(even.tasks);
    // The tail forced onto this step: big tasks plus shrinking pieces, another plan than either.
    expect(tail.tasks).toBeGreaterThan(even.tasks);
    expect(tail).not.toEqual(claiming);
    expect(plan({ claimMinTiles: 0, tailPercent: 0 })).toEqual(even);
    pool.dispose();
    using engine = new DecodeEngine(rt, {
      ...shape,
      headDim: 64,
      settings: { math: "cuda-cores", claimMinTiles: 1, tailEndTiles: 0 },
    });
    expect(engine.settings).toMatchObject({
      math: "cuda-cores",
      loader: "cp-async",
      claimMinTiles: 1,
      tailEndTiles: 0,
      tailPercent: 10,
    });
  });
  test("bad settings are typed errors", () => {
    const make =
      (settings: EngineSettings, headDim = 64) =>
      () =>
        new DecodeEngine(rt, { ...shape, headDim, settings });
    expect(make({ tailPercent: 91 })).toThrow(/tail_percent 91 is not in 0\.\.90/);
    expect(make({ claimMinTiles: -1 })).toThrow(InvalidArgumentError);
    expect(make({ tailEndTiles: 1.5 })).toThrow(InvalidArgumentError);
    expect(make({ math: "fast" as "auto" })).toThrow(/settings.math "fast"/);
    expect(make({ tailAll: 1 } as EngineSettings)).toThrow(/settings.tailAll is not an engine setting/);
    expect(make({ math: "tensor-cores" }, 256)).toThrow(UnsupportedError);
    expect(make({ math: "cuda-cores", loader: "bulk" })).toThrow(/bulk copies serve the tensor-core body only/);
  });
  test("a plan names the loader its kernels run with (the CPU backend runs the cp.async one unless told)", () => {
    const loaders = (settings?: EngineSettings) =>
      runCase(rt, { group: 2, numKvHeads: 2, headDim: 64, pageSize: 16, dtype: "f16", lengths: [40, 3], settings }).map(
        (r) => r.loader,
      );
    expect(loaders()).toEqual(["cp-async", "cp-async"]);
    expect(loaders({ loader: "bulk" })).toEqual(["bulk", "bulk"]);
  });
});

describe("an engine made for a pool (pkv_decode_engine_create_with)", () => {
  test("takes the pool's KV heads, head dim, page size and dtype, ignoring config's", () => {
    const pool = new TestPool(rt, {
      numLayers: 1,
      numPages: 16,
      pageSize: 8,
      numKvHeads: 2,
      headDim: 64,
      dtype: "bf16",
      maxSequences: 2,
      maxPagesPerSequence: 8,
    });
    const s = pool.addSequence(30);
    // num_qo_heads 8, then a shape no engine supports (it is the pool's that counts), policy, max_batch 2, sm_scale 0.
    const config = new Int32Array([8, 3, 96, 24, 7, 2, 2, 0]);
    const create = (qoHeads: number) => {
      config[0] = qoHeads;
      return outPointer("pkv_decode_engine_create_with", (out) =>
        native().pkv_decode_engine_create_with(rt.handle, config, pool.poolHandle, null, out),
      );
    };
    const engine = create(8);
    const settings = new Uint8Array(32);
    check(native().pkv_decode_engine_settings(engine, settings), "pkv_decode_engine_settings");
    expect(new Int32Array(settings.buffer)[2]).toBe(1); // loader: cp.async (CPU backend), from the default settings
    const info = PLAN_INFO.alloc();
    check(
      native().pkv_decode_plan(engine, pool.poolHandle, 1, new Int32Array([s.row]), new Int32Array([30]), -1, info),
      "pkv_decode_plan",
    );
    const q = new Uint16Array(8 * 64),
      out = new Uint16Array(8 * 64).fill(0x7fff);
    check(
      native().pkv_decode_run(engine, new DataView(info.buffer).getInt32(16, true), 0, q, out, null),
      "pkv_decode_run",
    );
    expect(out.every((x) => x !== 0x7fff)).toBe(true);
    check(native().pkv_decode_engine_destroy(engine), "pkv_decode_engine_destroy");
    expect(() => create(5)).toThrow(/num_qo_heads 5 is not a multiple of num_kv_heads 2/); // checked against the pool's
    pool.dispose();
  });
});

describe("block-table upload", () => {
  const shape = {
    numLayers: 2,
    numPages: 64,
    pageSize: 4,
    numKvHeads: 1,
    headDim: 64,
    dtype: "f16" as const,
    maxSequences: 4,
    maxPagesPerSequence: 16,
  };
  test("a plan consumes dirty columns up to each row's length, and only those", () => {
    const pool = new TestPool(rt, shape);
    const engine = new DecodeEngine(rt, { numQoHeads: 2, numKvHeads: 1, headDim: 64, pageSize: 4, dtype: "f16" });
    const s = pool.addSequence(10); // 3 pages
    pool.dirtyFrom[s.row] = 0;
    engine.plan(pool, [s]);
    expect(pool.dirtyFrom[s.row]).toBe(3);
    pool.dirtyFrom[s.row] = 5; // beyond the length: stays dirty until a step reads it
    engine.plan(pool, [s]);
    expect(pool.dirtyFrom[s.row]).toBe(5);
    engine.dispose();
    pool.dispose();
  });
  test("a dirty entry holding a bad page id fails the plan and leaves the marks as they were", () => {
    const pool = new TestPool(rt, shape);
    const engine = new DecodeEngine(rt, { numQoHeads: 2, numKvHeads: 1, headDim: 64, pageSize: 4, dtype: "f16" });
    const s = pool.addSequence(10);
    pool.table[s.row * 16 + 1] = 64;
    expect(() => engine.plan(pool, [s])).toThrow(OutOfRangeError);
    expect(pool.dirtyFrom[s.row]).toBe(0);
    pool.table[s.row * 16 + 1] = -1;
    expect(() => engine.plan(pool, [s])).toThrow(/outside 0\.\.63/);
    engine.dispose();
    pool.dispose();
  });
});

describe("misuse is a typed error", () => {
  const shape = {
    numLayers: 2,
    numPages: 16,
    pageSize: 16,
    numKvHeads: 2,
    headDim: 64,
    dtype: "f16" as const,
    maxSequences: 2,
    maxPagesPerSequence: 8,
  };
  const make = (extra = {}) =>
    new DecodeEngine(rt, {
      numQoHeads: 8,
      numKvHeads: 2,
      headDim: 64,
      pageSize: 16,
      dtype: "f16",
      maxBatch: 2,
      ...extra,
    });

  test("unsupported shapes", () => {
    expect(
      () => new DecodeEngine(rt, { numQoHeads: 34, numKvHeads: 2, headDim: 64, pageSize: 16, dtype: "f16" }),
    ).toThrow(UnsupportedError);
    expect(
      () => new DecodeEngine(rt, { numQoHeads: 8, numKvHeads: 2, headDim: 96, pageSize: 16, dtype: "f16" }),
    ).toThrow(UnsupportedError);
    expect(
      () => new DecodeEngine(rt, { numQoHeads: 8, numKvHeads: 3, headDim: 64, pageSize: 16, dtype: "f16" }),
    ).toThrow(InvalidArgumentError);
    expect(
      () => new DecodeEngine(rt, { numQoHeads: 8, numKvHeads: 2, headDim: 64, pageSize: 24, dtype: "f16" }),
    ).toThrow(/power of two/);
    expect(() => make({ policy: "fastest" })).toThrow(InvalidArgumentError);
  });

  test("stale plans, layers out of range, wrong sizes, engine/pool mismatch, bad lengths", () => {
    const pool = new TestPool(rt, shape);
    const engine = make();
    const s = pool.addSequence(20);
    const q = new Uint16Array(8 * 64),
      out = new Uint16Array(8 * 64);
    const first = engine.plan(pool, [s]);
    const second = engine.plan(pool, [s]);
    expect(() => engine.run(first, 0, q, out)).toThrow(StalePlanError);
    engine.run(second, 1, q, out);
    expect(() => engine.run(second, 2, q, out)).toThrow(OutOfRangeError);
    expect(() => engine.run(second, -1, q, out)).toThrow(OutOfRangeError);
    expect(() => engine.run(second, 0, q.subarray(1), out)).toThrow(InvalidArgumentError);
    expect(() => engine.run(second, 0, q, out, new Float32Array(3))).toThrow(InvalidArgumentError);
    expect(() => engine.plan(pool, [s, s, s])).toThrow(InvalidArgumentError); // over maxBatch
    const bad = {
      poolHandle: pool.poolHandle,
      describeBatch: (_: unknown, rows: Int32Array, lens: Int32Array) => {
        rows[0] = 0;
        lens[0] = 0;
      },
    };
    expect(() => engine.plan(bad, [s])).toThrow(/seq_lens\[0\] = 0/);
    const farRow = {
      poolHandle: pool.poolHandle,
      describeBatch: (_: unknown, rows: Int32Array, lens: Int32Array) => {
        rows[0] = 9;
        lens[0] = 1;
      },
    };
    expect(() => engine.plan(farRow, [s])).toThrow(OutOfRangeError);
    const tooLong = {
      poolHandle: pool.poolHandle,
      describeBatch: (_: unknown, rows: Int32Array, lens: Int32Array) => {
        rows[0] = 0;
        lens[0] = 8 * 16 + 1;
      },
    };
    expect(() => engine.plan(tooLong, [s])).toThrow(InvalidArgumentError);
    const other = new DecodeEngine(rt, { numQoHeads: 8, numKvHeads: 2, headDim: 128, pageSize: 16, dtype: "f16" });
    expect(() => other.plan(pool, [s])).toThrow(/differs from the engine/);
    const plain = make();
    expect(() => plain.run(second, 0, q, out)).toThrow(InvalidArgumentError); // another engine's plan
    other.dispose();
    plain.dispose();
    engine.dispose();
    expect(() => engine.run(second, 0, q, out)).toThrow(BadStateError);
    pool.dispose();
  });
});
