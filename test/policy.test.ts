// The adaptive policy's host side: table buckets, the judging rule, synthetic steps, the on-disk store.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InvalidArgumentError, UnsupportedError } from "../lib/errors";
import { openRuntime } from "../lib/runtime";
import { spread } from "../lib/policy/sizing";
import { seeded } from "../lib/random";
import { loadPolicy, policyKey, policyPath, savePolicy } from "../lib/policy/store";
import { BATCH_BUCKETS, batchBucket, cellStep, emptyChoices, TOKEN_BUCKETS, tokenBucket } from "../lib/policy/table";

const shape = { numQoHeads: 32, numKvHeads: 8, headDim: 128, pageSize: 16, dtype: "f16" as const };
const settings = {
  math: "tensor-cores",
  loader: "bulk",
  tailPercent: 10,
  tailMinSplits: 32,
  tailEndTiles: 2,
  claimMinTiles: 8,
} as const;

describe("table buckets", () => {
  test("batches bucket by powers of two, the last open-ended", () => {
    expect([1, 2, 3, 4, 7, 8, 1023, 1024, 5000].map(batchBucket)).toEqual([0, 1, 1, 2, 2, 3, 9, 10, 10]);
  });
  test("tokens bucket from 2^9 up, both ends open", () => {
    expect([1, 511, 512, 1023, 1024, 2 ** 22, 2 ** 30].map(tokenBucket)).toEqual([0, 0, 0, 0, 1, 13, 13]);
  });
  test("every cell's representative step falls in its own cell", () => {
    for (let b = 0; b < BATCH_BUCKETS; b++)
      for (let t = 0; t < TOKEN_BUCKETS; t++) {
        const { batch, tokens } = cellStep(b, t);
        expect([batchBucket(batch), tokenBucket(tokens)]).toEqual([b, t]);
      }
  });
});

describe("synthetic steps", () => {
  test("lengths sum to the step's tokens, each at least 1, spread unevenly", () => {
    const random = seeded(1);
    for (const [tokens, batch] of [
      [512, 1],
      [4096, 8],
      [1 << 20, 128],
      [1024, 1024],
    ] as const) {
      const lengths = spread(tokens, batch, random);
      expect(lengths.length).toBe(batch);
      expect(lengths.reduce((a, n) => a + n, 0)).toBe(tokens);
      expect(Math.min(...lengths)).toBeGreaterThanOrEqual(1);
      if (batch >= 8 && tokens > 4 * batch) expect(Math.max(...lengths)).toBeGreaterThan(2 * Math.min(...lengths));
    }
  });
  test("the generator repeats from its seed", () => {
    const [a, b] = [seeded(42), seeded(42)];
    expect(Array.from({ length: 5 }, a)).toEqual(Array.from({ length: 5 }, b));
  });
});

describe("store", () => {
  const dir = mkdtempSync(join(tmpdir(), "pkv-policy-"));
  process.env.PKV_CACHE_DIR = dir;
  afterAll(() => {
    delete process.env.PKV_CACHE_DIR;
    rmSync(dir, { recursive: true, force: true });
  });

  test("a saved table loads back under the same key only", () => {
    const choices = emptyChoices();
    choices[3] = 1;
    const key = policyKey("Some GPU", shape, settings);
    savePolicy(key, { choices, measurements: [] });
    expect(Array.from(loadPolicy(key)!.choices)).toEqual(Array.from(choices));
    expect(loadPolicy(policyKey("Other GPU", shape, settings))).toBeUndefined();
    expect(loadPolicy(policyKey("Some GPU", { ...shape, pageSize: 32 }, settings))).toBeUndefined();
  });
  test("a table measured with other kernels or planner thresholds is not loaded", () => {
    savePolicy(policyKey("Some GPU", shape, settings), { choices: emptyChoices(), measurements: [] });
    for (const other of [
      { math: "cuda-cores" },
      { loader: "cp-async" },
      { tailPercent: 0 },
      { tailMinSplits: 0 },
      { tailEndTiles: 0 },
      { claimMinTiles: 1 },
    ] as const) {
      const key = policyKey("Some GPU", shape, { ...settings, ...other });
      expect(key).not.toBe(policyKey("Some GPU", shape, settings));
      expect(loadPolicy(key)).toBeUndefined();
    }
  });
  test("an engine looks up the table of its resolved settings", () => {
    using rt = openRuntime({ backend: "cpu" });
    const make = (s?: { math: "cuda-cores" }) => rt.createDecodeEngine({ ...shape, settings: s });
    using auto = make();
    using cudaCores = make({ math: "cuda-cores" });
    expect(auto.settings.math).not.toBe("auto");
    expect(policyKey("Some GPU", shape, auto.settings)).not.toBe(policyKey("Some GPU", shape, cudaCores.settings));
  });
  test("a corrupt file reads as no calibration", () => {
    const key = policyKey("Broken GPU", shape, settings);
    savePolicy(key, { choices: emptyChoices(), measurements: [] });
    writeFileSync(policyPath(key), "{ not json");
    expect(loadPolicy(key)).toBeUndefined();
  });
});

test("calibration needs the CUDA backend", () => {
  using rt = openRuntime({ backend: "cpu" });
  expect(() => rt.calibrate(shape)).toThrow(UnsupportedError);
});

describe("the engine follows the table", () => {
  test("a measured cell decides; other cells and a cleared table use the built-in rule", () => {
    using rt = openRuntime({ backend: "cpu" });
    const small = { numKvHeads: 2, headDim: 64, pageSize: 16, dtype: "f16" as const };
    using cache = rt.createKVCache({ ...small, numLayers: 1, numPages: 64 });
    using engine = rt.createDecodeEngine({ ...small, numQoHeads: 4, policy: "adaptive", maxBatch: 4 });
    const seqs = [600, 200].map((n) => {
      const seq = cache.createSequence();
      cache.append(seq, n);
      return seq;
    });
    const builtIn = engine.plan(cache, seqs).kernel; // 2 rows, 800 tokens: cell (1, 0)
    const flipped = builtIn === "baseline" ? "persistent" : "baseline";
    const choices = emptyChoices();
    choices[batchBucket(2) * TOKEN_BUCKETS + tokenBucket(800)] = flipped === "persistent" ? 1 : 0;
    engine.setPolicyTable({ choices, measurements: [] });
    expect(engine.calibrated).toBe(true);
    expect(engine.plan(cache, seqs).kernel).toBe(flipped);
    expect(engine.plan(cache, seqs.slice(0, 1)).kernel).toBe(
      engine.plan(cache, seqs.slice(0, 1), { policy: "adaptive" }).kernel,
    );
    engine.setPolicyTable(undefined);
    expect(engine.calibrated).toBe(false);
    expect(engine.plan(cache, seqs).kernel).toBe(builtIn);
  });

  test("a table of the wrong size or with a bad cell is refused and changes nothing", () => {
    using rt = openRuntime({ backend: "cpu" });
    using engine = rt.createDecodeEngine({ numQoHeads: 4, numKvHeads: 2, headDim: 64, pageSize: 16, dtype: "f16" });
    expect(() => engine.setPolicyTable({ choices: new Int8Array(5), measurements: [] })).toThrow(InvalidArgumentError);
    const bad = emptyChoices();
    bad[7] = 2;
    expect(() => engine.setPolicyTable({ choices: bad, measurements: [] })).toThrow(InvalidArgumentError);
    expect(engine.calibrated).toBe(false);
  });
});
