// Several query tokens per row on the CPU backend: the reference's causal semantics, and plans mixing
// query lengths (decode rows and speculative rows of up to 16 query rows on the decode executor, the
// others on the multi-query one, splits and merges included) against it.
import { afterAll, describe, expect, test } from "bun:test";
import { decode } from "../lib/dtype";
import { DecodeEngine } from "../lib/engine";
import { InvalidArgumentError } from "../lib/errors";
import { referenceDecode } from "../lib/reference";
import { referenceMultiquery } from "../lib/reference-multiquery";
import { openRuntime } from "../lib/runtime";
import { tolerance } from "../lib/testing/decode-check";
import { decodeKernelsTakeAll, type MultiqueryCase, runMultiqueryCase } from "../lib/testing/multiquery-check";
import { randomHalves, rng, TestPool } from "../lib/testing/pool";
import { decodeAttention, randomPagedBatch } from "./support/attention";

const rt = openRuntime({ backend: "cpu" });
afterAll(() => rt.dispose());

function expectClose(c: MultiqueryCase, options: Parameters<typeof runMultiqueryCase>[2] = {}) {
  const r = runMultiqueryCase(rt, c, options);
  expect({ unwritten: r.unwritten, queryTokens: r.queryTokens }).toEqual({
    unwritten: 0,
    queryTokens: c.rows.reduce((n, row) => n + row.qLen, 0),
  });
  expect(r.relError).toBeLessThan(tolerance(c.dtype));
  expect(r.lseError).toBeLessThan(1e-3);
  return r;
}

describe("pkv_reference_multiquery", () => {
  const batch = randomPagedBatch({
    numQoHeads: 4,
    numKvHeads: 2,
    headDim: 64,
    pageSize: 4,
    dtype: "f16",
    seqLens: [9, 1, 20],
    seed: 5,
  });
  const shape = { numQoHeads: 4, numKvHeads: 2, headDim: 64, pageSize: 4, dtype: "f16" as const };
  const common = {
    shape,
    pageIndptr: batch.pageIndptr,
    pageIndices: batch.pageIndices,
    seqLens: batch.seqLens,
    kPages: batch.kPages,
    vPages: batch.vPages,
    numPages: batch.numPages,
  };

  test("one query token per row is pkv_reference_decode, bit for bit", () => {
    const want = new Uint16Array(batch.q.length),
      got = new Uint16Array(batch.q.length);
    const wantLse = new Float32Array(12),
      gotLse = new Float32Array(12);
    referenceDecode({ ...common, q: batch.q, out: want, lse: wantLse });
    referenceMultiquery({ ...common, qIndptr: Int32Array.of(0, 1, 2, 3), q: batch.q, out: got, lse: gotLse });
    expect(got).toEqual(want);
    expect(gotLse).toEqual(wantLse);
  });

  test("query token j of a row sees its context up to its own position (float64 check)", () => {
    // Rows of 3, 1 and 5 query tokens: token j of row b is a decode query over seqLen - qLen + j + 1 tokens.
    const qLens = [3, 1, 5],
      qIndptr = Int32Array.of(0, 3, 4, 9);
    const random = rng(9);
    const q = randomHalves("f16", 9 * 4 * 64, random, 2);
    const out = new Uint16Array(q.length),
      lse = new Float32Array(9 * 4);
    referenceMultiquery({ ...common, qIndptr, q, out, lse });
    const got = decode("f16", out);
    let token = 0;
    for (let b = 0; b < 3; b++)
      for (let j = 0; j < qLens[b]!; j++, token++) {
        const visible = batch.seqLens[b]! - qLens[b]! + j + 1;
        const one = {
          ...batch,
          pageIndptr: Int32Array.of(0, batch.pageIndptr[b + 1]! - batch.pageIndptr[b]!),
          pageIndices: batch.pageIndices.subarray(batch.pageIndptr[b]!, batch.pageIndptr[b + 1]!),
          seqLens: Int32Array.of(visible),
          q: q.subarray(token * 256, (token + 1) * 256),
        };
        const want = decodeAttention(one, 1 / 8);
        for (let i = 0; i < 256; i++) expect(Math.abs(got[token * 256 + i]! - want.out[i]!)).toBeLessThan(2e-3);
        for (let h = 0; h < 4; h++) expect(Math.abs(lse[token * 4 + h]! - want.lse[h]!)).toBeLessThan(1e-4);
      }
  });

  test("a row with more query tokens than its length is refused", () => {
    const q = new Uint16Array(10 * 256),
      out = new Uint16Array(10 * 256);
    expect(() => referenceMultiquery({ ...common, qIndptr: Int32Array.of(0, 2, 4, 10), q, out })).toThrow(
      /row 1 has 2 query tokens/,
    );
  });
});

describe("plans with query lengths (CPU backend) match the reference", () => {
  test("speculative sizes 1..16 mixed in one step, g4 d128 page 16 f16", () => {
    expectClose({
      group: 4,
      numKvHeads: 2,
      headDim: 128,
      pageSize: 16,
      dtype: "f16",
      rows: [
        { length: 40, qLen: 1 },
        { length: 17, qLen: 2 },
        { length: 300, qLen: 4 },
        { length: 16, qLen: 16 },
        { length: 129, qLen: 8 },
        { length: 5, qLen: 1 },
        { length: 64, qLen: 16 },
      ],
    });
  });
  test("every group size 1-16 with odd ones, bf16, page boundaries inside the new tokens", () => {
    for (const group of [1, 2, 3, 5, 7, 11, 16])
      expectClose({
        group,
        numKvHeads: 1,
        headDim: 64,
        pageSize: 8,
        dtype: "bf16",
        // 12 new tokens starting at 61 cross the page edge at 64; 9 new of 9 fill a page and one more.
        rows: [
          { length: 73, qLen: 12 },
          { length: 9, qLen: 9 },
          { length: 33, qLen: 1 },
        ],
        seed: group,
      });
  });
  test("head dims 64/128/256 x page sizes 1, 2, 256", () => {
    for (const [headDim, pageSize] of [
      [256, 1],
      [64, 256],
      [128, 2],
    ] as const)
      expectClose({
        group: 2,
        numKvHeads: 2,
        headDim,
        pageSize,
        dtype: "f16",
        rows: [
          { length: 3, qLen: 3 },
          { length: 260, qLen: 7 },
          { length: 1, qLen: 1 },
        ],
      });
  });
  test("a chunk of prefill (260 tokens over 900) and a whole prompt (a 130-token chunk from the start)", () => {
    expectClose({
      group: 4,
      numKvHeads: 1,
      headDim: 64,
      pageSize: 16,
      dtype: "f16",
      rows: [
        { length: 900, qLen: 260 },
        { length: 130, qLen: 130 },
        { length: 50, qLen: 1 },
      ],
    });
  });
  test("a 2048-token chunk over a 2100-token context (one query head, d64)", () => {
    expectClose({
      group: 1,
      numKvHeads: 1,
      headDim: 64,
      pageSize: 32,
      dtype: "bf16",
      rows: [
        { length: 2100, qLen: 2048 },
        { length: 70, qLen: 3 },
      ],
    });
  });
  test("a few speculative rows over long contexts are split, and the splits merge exactly", () => {
    const r = expectClose({
      group: 4,
      numKvHeads: 2,
      headDim: 64,
      pageSize: 16,
      dtype: "f16",
      rows: [
        { length: 6000, qLen: 4 },
        { length: 2500, qLen: 16 },
      ],
    });
    expect(r.maxSplits).toBeGreaterThan(1);
    expect(r.kernel).toBe("multiquery"); // the 16-token draft: 64 query rows
  });
  test("speculative rows of up to 16 query rows run on the decode kernels: every group, splits, causal edges", () => {
    // Per group, its largest draft (16 / group tokens) and a smaller one: over a long context (split, and
    // the last tile holding fewer tokens than the draft, so an early query sees none of a late split's),
    // over a context that is all new tokens, and across a page edge.
    for (const [group, pageSize] of [
      [1, 1],
      [2, 16],
      [3, 256],
      [4, 16],
      [5, 8],
      [8, 64],
      [16, 4],
    ] as const) {
      const most = Math.floor(16 / group);
      const c: MultiqueryCase = {
        group,
        numKvHeads: 2,
        headDim: group % 2 ? 64 : 128,
        pageSize,
        dtype: group % 3 ? "f16" : "bf16",
        rows: [
          { length: 5 * 1024 + 1, qLen: most },
          { length: most, qLen: most },
          { length: Math.max(most, 2 * pageSize + Math.floor(most / 2)), qLen: Math.max(1, most - 1) },
          { length: 70, qLen: 1 },
        ],
        seed: group,
      };
      expect(decodeKernelsTakeAll(c)).toBe(true);
      for (const policy of ["baseline", "persistent"] as const) {
        const r = expectClose(c, { policy });
        expect(r.kernel).toBe(policy);
        expect(r.maxSplits).toBeGreaterThan(1);
      }
    }
  });
  test("a few speculative rows of a long step: claiming splits and the dynamic tail", () => {
    // The persistent planner's few-row strategies, forced on (as the sanitizer runs force them).
    const c: MultiqueryCase = {
      group: 4,
      numKvHeads: 1,
      headDim: 64,
      pageSize: 16,
      dtype: "f16",
      rows: [
        { length: 60_001, qLen: 3 }, // with the next, 566 tiles of 128 tokens: over the CPU wave's 396
        { length: 12_345, qLen: 4 },
        { length: 99, qLen: 2 },
      ],
    };
    for (const settings of [
      { claimMinTiles: 1, tailPercent: 0 },
      { tailPercent: 30, tailMinSplits: 0, claimMinTiles: 0 },
    ]) {
      const r = expectClose(c, { policy: "persistent", settings });
      expect(r.kernel).toBe("persistent");
      expect(r.maxSplits).toBeGreaterThan(1);
    }
    // The CUDA-core body computes one query head a thread group: its rows of several queries take the
    // multi-query kernels.
    const cores = runMultiqueryCase(rt, c, { settings: { math: "cuda-cores" } });
    expect(cores.kernel).toBe("multiquery");
    expect(cores.relError).toBeLessThan(tolerance(c.dtype));
  });
  test("random mixes of query lengths and contexts", () => {
    const random = rng(2026);
    for (let round = 0; round < 6; round++) {
      const group = 1 + Math.floor(random() * 16);
      const rows = Array.from({ length: 1 + Math.floor(random() * 5) }, () => {
        const qLen = random() < 0.3 ? 1 : 1 + Math.floor(random() * (random() < 0.2 ? 200 : 16));
        return { length: qLen + Math.floor(random() * 400), qLen };
      });
      expectClose({
        group,
        numKvHeads: 1 + Math.floor(random() * 2),
        headDim: [64, 128, 256][round % 3]!,
        pageSize: [1, 4, 16, 64, 256][Math.floor(random() * 5)]!,
        dtype: round % 2 ? "bf16" : "f16",
        rows,
        seed: round,
      });
    }
  });
});

describe("plans with query lengths: the decode path and misuse", () => {
  test("PKV_MULTIQUERY_KERNEL=tiles keeps speculative rows on the multi-query kernels, with the same results", () => {
    // Read by the native engine at creation, so it takes a process of its own (bun does not pass
    // process.env writes to getenv).
    const script = `
      import { openRuntime } from "./lib/runtime";
      import { runMultiqueryCase } from "./lib/testing/multiquery-check";
      using rt = openRuntime({ backend: "cpu" });
      const c = { group: 4, numKvHeads: 2, headDim: 64, pageSize: 16, dtype: "f16", rows: [{ length: 700, qLen: 4 }, { length: 9, qLen: 1 }] };
      const r = runMultiqueryCase(rt, c);
      console.log(JSON.stringify({ kernel: r.kernel, relError: r.relError, unwritten: r.unwritten }));`;
    const run = (value: string | undefined) => {
      const env: Record<string, string | undefined> = { ...process.env, PKV_MULTIQUERY_KERNEL: value };
      if (value === undefined) delete env.PKV_MULTIQUERY_KERNEL;
      const proc = Bun.spawnSync([process.execPath, "-e", script], {
        cwd: new URL("..", import.meta.url).pathname,
        env,
        stdout: "pipe",
        stderr: "pipe",
      });
      if (proc.exitCode !== 0) throw new Error(proc.stderr.toString());
      return JSON.parse(proc.stdout.toString().trim()) as { kernel: string; relError: number; unwritten: number };
    };
    const decodePath = run(undefined),
      tiles = run("tiles");
    expect(decodePath.kernel).not.toBe("multiquery");
    expect(tiles.kernel).toBe("multiquery");
    for (const r of [decodePath, tiles]) {
      expect(r.unwritten).toBe(0);
      expect(r.relError).toBeLessThan(tolerance("f16"));
    }
  });
  const shape = { numLayers: 1, numPages: 40, pageSize: 16, numKvHeads: 2, headDim: 64, dtype: "f16" as const };
  test("qLens of 1 everywhere give exactly the plain plan's results", () => {
    const pool = new TestPool(rt, { ...shape, maxSequences: 3, maxPagesPerSequence: 12 }, 3);
    const engine = new DecodeEngine(rt, { numQoHeads: 8, numKvHeads: 2, headDim: 64, pageSize: 16, dtype: "f16" });
    try {
      const seqs = [pool.addSequence(33), pool.addSequence(1), pool.addSequence(180)];
      const q = randomHalves("f16", 3 * 8 * 64, rng(4), 2);
      const plain = new Uint16Array(q.length),
        withLens = new Uint16Array(q.length);
      engine.run(engine.plan(pool, seqs), 0, q, plain);
      const plan = engine.plan(pool, seqs, { qLens: [1, 1, 1] });
      expect(plan.kernel).not.toBe("multiquery");
      expect(plan.queryTokens).toBe(3);
      engine.run(plan, 0, q, withLens);
      expect(withLens).toEqual(plain);
    } finally {
      engine.dispose();
      pool.dispose();
    }
  });
  test("bad query lengths and wrongly sized q are refused with typed errors", () => {
    const pool = new TestPool(rt, { ...shape, maxSequences: 2, maxPagesPerSequence: 12 }, 3);
    const engine = new DecodeEngine(rt, { numQoHeads: 8, numKvHeads: 2, headDim: 64, pageSize: 16, dtype: "f16" });
    try {
      const seqs = [pool.addSequence(20), pool.addSequence(5)];
      expect(() => engine.plan(pool, seqs, { qLens: [1] })).toThrow(InvalidArgumentError);
      expect(() => engine.plan(pool, seqs, { qLens: [0, 1] })).toThrow(InvalidArgumentError);
      expect(() => engine.plan(pool, seqs, { qLens: [2.5, 1] })).toThrow(InvalidArgumentError);
      expect(() => engine.plan(pool, seqs, { qLens: [1, 6] })).toThrow(
        /q_lens\[1\] = 6 is not in 1..seq_lens\[1\] = 5/,
      );
      const plan = engine.plan(pool, seqs, { qLens: [4, 5] });
      expect(plan.queryTokens).toBe(9);
      expect(() => engine.run(plan, 0, new Uint16Array(2 * 8 * 64), new Uint16Array(2 * 8 * 64))).toThrow(
        /\[9\]\[8\]\[64\]/,
      );
      // A refused plan leaves the previous one runnable.
      expect(() => engine.plan(pool, seqs, { qLens: [21, 1] })).toThrow(InvalidArgumentError);
      const out = new Uint16Array(9 * 8 * 64);
      engine.run(plan, 0, randomHalves("f16", out.length, rng(1)), out);
      expect(out.some((x) => x !== 0)).toBe(true);
    } finally {
      engine.dispose();
      pool.dispose();
    }
  });
});
