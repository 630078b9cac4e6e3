// pkv_reference_decode (through lib/reference.ts) against the float64 TypeScript decode attention in
// test/support/attention.ts, on random paged batches with shuffled page ids.
//
// Tolerances. Both sides read the same stored 16-bit K, V and q. The native reference multiplies in fp32
// (a product of two 16-bit values is exact in fp32: 11+11 or 8+8 significant bits < 24) and sums in fp64,
// so before its final rounding it agrees with float64 to about 1e-15; what remains is
//   - the output's rounding to the storage type: half an ulp, u = 2^-11 relative (f16) or 2^-8 (bf16),
//     after a rounding to fp32 on the way (2^-24), so (u + 2^-20) * |o| bounds both;
//   - sm_scale travels as a float (the header's field), 1 fp32 ulp (6e-8 relative) from the float64 value;
//     times logits of at most ~60 here that moves outputs and lse by under 4e-6 absolute. An off-by-one token,
//     a wrong page or head, or a wrong scale moves them by 1e-4 or far more, so the bound still catches them;
//   - lse is stored as fp32: 2^-23 * |lse| + the same 4e-6.
import { describe, expect, test } from "bun:test";
import * as pkv from "../lib/index.ts";
import { referenceDecode } from "../lib/reference.ts";
import { decode, type DType } from "../lib/dtype.ts";
import { decodeAttention, randomPagedBatch, type BatchSpec, type PagedBatch } from "./support/attention.ts";

const UNIT_ROUNDOFF: Record<DType, number> = { f16: 2 ** -11, bf16: 2 ** -8 };
const NAN_BITS: Record<DType, number> = { f16: 0x7e00, bf16: 0x7fc0 };
const SCALE_SLACK = 4e-6;

interface Result {
  out: Float32Array;
  lse: Float32Array;
}

function runNative(batch: PagedBatch, smScale = 0, withLse = true): Result {
  const out = new Uint16Array(batch.q.length).fill(NAN_BITS[batch.dtype]); // poison: every element must be written
  const lse = withLse ? new Float32Array(batch.seqLens.length * batch.numQoHeads).fill(Number.NaN) : undefined;
  referenceDecode({ shape: { ...batch, smScale }, ...batch, out, lse });
  return { out: decode(batch.dtype, out), lse: lse ?? new Float32Array(0) };
}

/** NaN in every K/V slot no sequence may read: spare pages and the tail of each partial last page. */
function poisonUnread(batch: PagedBatch): void {
  const { numKvHeads: hkv, pageSize: ps, headDim: d } = batch;
  const read = new Uint8Array(batch.numPages * ps); // 1 where (page, slot) holds a token of some sequence
  for (let b = 0; b < batch.seqLens.length; b++)
    for (let t = 0; t < batch.seqLens[b]!; t++) {
      const page = batch.pageIndices[batch.pageIndptr[b]! + Math.floor(t / ps)]!;
      read[page * ps + (t % ps)] = 1;
    }
  for (let page = 0; page < batch.numPages; page++)
    for (let slot = 0; slot < ps; slot++) {
      if (read[page * ps + slot]) continue;
      for (let h = 0; h < hkv; h++) {
        const at = ((page * hkv + h) * ps + slot) * d;
        batch.kPages.fill(NAN_BITS[batch.dtype], at, at + d);
        batch.vPages.fill(NAN_BITS[batch.dtype], at, at + d);
      }
    }
}

function expectClose(batch: PagedBatch, smScale: number, got: Result, withLse = true): { worst: number } {
  const scale = smScale > 0 ? smScale : 1 / Math.sqrt(batch.headDim);
  const want = decodeAttention(batch, scale);
  const u = UNIT_ROUNDOFF[batch.dtype] + 2 ** -20;
  let worst = 0; // largest error as a fraction of its tolerance
  const bad: string[] = []; // the first few misses, so a failure shows where
  const compare = (what: string, value: number, expected: number, tol: number) => {
    const err = Math.abs(value - expected);
    if (!(err <= tol) && bad.length < 5)
      bad.push(`${what} = ${value}, expected ${expected} (tol ${tol.toExponential(2)})`);
    worst = Math.max(worst, err / tol);
  };
  for (let i = 0; i < want.out.length; i++)
    compare(`out[${i}]`, got.out[i]!, want.out[i]!, u * Math.abs(want.out[i]!) + SCALE_SLACK);
  if (withLse)
    for (let i = 0; i < want.lse.length; i++) {
      if (want.lse[i] === -Infinity) {
        if (got.lse[i] !== -Infinity && bad.length < 5) bad.push(`lse[${i}] = ${got.lse[i]}, expected -Infinity`);
        continue;
      }
      compare(`lse[${i}]`, got.lse[i]!, want.lse[i]!, 2 ** -23 * Math.abs(want.lse[i]!) + SCALE_SLACK);
    }
  expect(bad).toEqual([]);
  return { worst };
}

// Context lengths that hit the edges of a page size: one token, a page exactly, a partial last page, more.
function lengthsFor(pageSize: number, random: number): number[] {
  const partial = pageSize === 1 ? 37 : pageSize + 1 + (random % (pageSize - 1));
  return [1, pageSize, partial, Math.min(3 * pageSize - 1, 700) || 1, 2];
}

// A small batch: one KV head, group 4, d 64, 16-token pages, f16, unless `over` says otherwise.
function small(over: Partial<BatchSpec> & { seqLens: number[]; seed: number }): BatchSpec {
  return { numKvHeads: 1, numQoHeads: 4, headDim: 64, pageSize: 16, dtype: "f16", ...over };
}

function check(spec: BatchSpec, smScale = 0): number {
  const batch = randomPagedBatch(spec);
  poisonUnread(batch);
  return expectClose(batch, smScale, runNative(batch, smScale)).worst;
}

describe("reference decode vs float64 TypeScript", () => {
  const dtypes: DType[] = ["f16", "bf16"];
  // Every head dim x page size x dtype, with group sizes varying across the cases.
  let seed = 1;
  for (const headDim of [64, 128, 256])
    for (const pageSize of [1, 16, 256])
      for (const dtype of dtypes) {
        const group = [1, 3, 4, 8, 5, 16][seed % 6]!;
        const spec: BatchSpec = {
          numKvHeads: 2,
          numQoHeads: 2 * group,
          headDim,
          pageSize,
          dtype,
          seqLens: lengthsFor(pageSize, seed * 7919),
          seed: seed++,
        };
        test(`d=${headDim} page=${pageSize} ${dtype} g=${group} lens=${spec.seqLens}`, () => {
          expect(check(spec)).toBeLessThanOrEqual(1);
        });
      }

  // Every group size 1..16 (odd ones included), with head dims, page sizes and dtypes rotating.
  for (let group = 1; group <= 16; group++) {
    const numKvHeads = group <= 4 ? 3 : 1;
    const spec: BatchSpec = {
      numKvHeads,
      numQoHeads: numKvHeads * group,
      headDim: [64, 128, 256][group % 3]!,
      pageSize: [16, 1, 256, 16][group % 4]!,
      dtype: dtypes[group % 2]!,
      seqLens: [group * 13 + 5, 1, 40],
      seed: 100 + group,
      qScale: 3, // peakier softmax than the cases above
    };
    const name = `Hq=${spec.numQoHeads} Hkv=${numKvHeads} d=${spec.headDim} page=${spec.pageSize} ${spec.dtype}`;
    test(`group size ${group} (${name})`, () => {
      expect(check(spec)).toBeLessThanOrEqual(1);
    });
  }

  for (const smScale of [0.02, 0.5, 1.5])
    test(`custom sm_scale ${smScale}`, () => {
      for (const dtype of dtypes) {
        const shape = { numKvHeads: 2, numQoHeads: 8, headDim: 128, dtype };
        const spec = small({ ...shape, seqLens: [50, 17, 1], seed: 7, qScale: 2 });
        expect(check(spec, smScale)).toBeLessThanOrEqual(1);
      }
      // and the scale is really applied: another scale gives other outputs
      const batch = randomPagedBatch(small({ numQoHeads: 2, seqLens: [30], seed: 8 }));
      expect(runNative(batch, smScale).out).not.toEqual(runNative(batch, smScale * 2).out);
    });

  test("a sequence of length 0 gives a zero output and lse -Infinity; its neighbours are unaffected", () => {
    const batch = randomPagedBatch(small({ numKvHeads: 2, numQoHeads: 6, seqLens: [20, 0, 1, 0], seed: 11 }));
    poisonUnread(batch);
    const got = runNative(batch);
    expectClose(batch, 0, got);
    const per = batch.numQoHeads * batch.headDim;
    expect([...got.out.subarray(per, 2 * per)].every((x) => x === 0)).toBe(true);
    expect([...got.lse.subarray(6, 12)]).toEqual(new Array(6).fill(-Infinity));
    expect([...got.out.subarray(0, per)].some((x) => x !== 0)).toBe(true);
  });

  test("a batch of empty sequences only, and an empty batch", () => {
    const batch = randomPagedBatch(small({ numQoHeads: 1, pageSize: 1, dtype: "bf16", seqLens: [0, 0], seed: 12 }));
    const got = runNative(batch);
    expect([...got.out].every((x) => x === 0)).toBe(true);
    expect([...got.lse]).toEqual([-Infinity, -Infinity]);
    const empty = randomPagedBatch(small({ seqLens: [], seed: 13 }));
    expect(runNative(empty).out.length).toBe(0);
  });

  test("without lse the output is the same", () => {
    const batch = randomPagedBatch(
      small({ numKvHeads: 2, numQoHeads: 14, headDim: 128, dtype: "bf16", seqLens: [33, 100], seed: 14 }),
    );
    const withLse = runNative(batch, 0, true);
    const without = runNative(batch, 0, false);
    expect(without.out).toEqual(withLse.out);
    expectClose(batch, 0, without, false);
  });

  test("page ids are honoured: the same contexts on other pages give the same result", () => {
    const a = randomPagedBatch(small({ seqLens: [40, 20], seed: 15 }));
    // Move every page to a new id (reversed order) and rewrite the page table to match.
    const pageElems = a.numKvHeads * a.pageSize * a.headDim;
    const moved = { ...a, kPages: new Uint16Array(a.kPages.length), vPages: new Uint16Array(a.vPages.length) };
    const newId = (p: number) => a.numPages - 1 - p;
    for (let p = 0; p < a.numPages; p++) {
      moved.kPages.set(a.kPages.subarray(p * pageElems, (p + 1) * pageElems), newId(p) * pageElems);
      moved.vPages.set(a.vPages.subarray(p * pageElems, (p + 1) * pageElems), newId(p) * pageElems);
    }
    moved.pageIndices = a.pageIndices.map(newId);
    expect(runNative(moved).out).toEqual(runNative(a).out);
  });
});

describe("referenceDecode validation", () => {
  const base = () => randomPagedBatch(small({ numKvHeads: 2, seqLens: [20, 5], seed: 21 }));
  const call =
    (batch: PagedBatch, over: Record<string, unknown> = {}, shape: Record<string, unknown> = {}) =>
    () =>
      referenceDecode({
        shape: { ...batch, ...shape } as never,
        ...batch,
        out: new Uint16Array(batch.q.length),
        ...over,
      } as never);

  test("the unmodified call succeeds (so each case below fails for its one change)", () => {
    expect(call(base())).not.toThrow();
  });

  test("wrong lengths or types of the arrays are InvalidArgumentError, checked before the native call", () => {
    const b = base();
    const cases: Record<string, Record<string, unknown>> = {
      "short kPages": { kPages: b.kPages.subarray(1) },
      "long vPages": { vPages: new Uint16Array(b.vPages.length + 1) },
      "short q": { q: b.q.subarray(0, b.q.length - 1) },
      "short out": { out: new Uint16Array(b.q.length - 64) },
      "lse of the wrong length": { lse: new Float32Array(3) },
      "pageIndptr of the wrong length": { pageIndptr: Int32Array.from([0, 2]) },
      "pageIndptr beyond pageIndices": { pageIndices: b.pageIndices.subarray(0, 1) },
      "decreasing pageIndptr": { pageIndptr: Int32Array.from([0, 2, 1]), seqLens: Int32Array.from([20, 0]) },
      "numPages larger than the pages given": { numPages: b.numPages + 1 },
      "numPages fractional": { numPages: 1.5 },
      "Float32Array q": { q: new Float32Array(b.q.length) },
      "plain array seqLens": { seqLens: [20, 5] },
      "Uint32Array pageIndices": { pageIndices: Uint32Array.from(b.pageIndices) },
    };
    for (const [what, over] of Object.entries(cases)) expect(call(b, over), what).toThrow(pkv.InvalidArgumentError);
  });

  test("shapes the native side refuses: typed errors with the reason", () => {
    const b = base();
    const unsupported: [Record<string, unknown>, RegExp][] = [
      [{ headDim: 96 }, /head_dim 96/],
      [{ pageSize: 3 }, /page_size 3/],
      [{ numQoHeads: 34, numKvHeads: 2 }, /group size 17/],
    ];
    for (const [shape, reason] of unsupported) {
      // keep the array lengths consistent with the changed shape, so only the native check can object
      const s = { ...b, ...shape } as PagedBatch;
      const pageElems = s.numKvHeads * s.pageSize * s.headDim;
      const sized = {
        kPages: new Uint16Array(s.numPages * pageElems),
        vPages: new Uint16Array(s.numPages * pageElems),
        q: new Uint16Array(s.seqLens.length * s.numQoHeads * s.headDim),
        out: new Uint16Array(s.seqLens.length * s.numQoHeads * s.headDim),
      };
      expect(call(b, sized, shape)).toThrow(pkv.UnsupportedError);
      expect(call(b, sized, shape)).toThrow(reason);
    }
    expect(call(b, { q: new Uint16Array(2 * 3 * 64), out: new Uint16Array(2 * 3 * 64) }, { numQoHeads: 3 })).toThrow(
      pkv.InvalidArgumentError,
    );
    expect(call(b, {}, { dtype: "fp8" })).toThrow(pkv.InvalidArgumentError);
    expect(call(b, {}, { smScale: -1 })).toThrow(pkv.InvalidArgumentError);
    expect(call(b, {}, { smScale: Number.NaN })).toThrow(pkv.InvalidArgumentError);
  });

  test("a page id outside the pool is OutOfRangeError; a context longer than its pages is InvalidArgumentError", () => {
    const b = base();
    const badPage = Int32Array.from(b.pageIndices);
    badPage[1] = b.numPages;
    expect(call(b, { pageIndices: badPage })).toThrow(pkv.OutOfRangeError);
    badPage[1] = -1;
    expect(call(b, { pageIndices: badPage })).toThrow(pkv.OutOfRangeError);
    expect(call(b, { seqLens: Int32Array.from([33, 5]) })).toThrow(pkv.InvalidArgumentError);
    expect(call(b, { seqLens: Int32Array.from([33, 5]) })).toThrow(/tokens but/);
  });
});
