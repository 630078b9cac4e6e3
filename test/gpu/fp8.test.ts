// FP8 KV storage on the GPU: the CUDA backend stores the same codes and scales as the CPU backend (the
// hardware's cvt.rn.satfinite against the host conversion, on every f16 value and on random rows), keeps
// them byte for byte through copies and swaps, and both decode kernels match the reference on the same
// quantized pages over group sizes 1-16, head dims 64/128/256, page sizes 1-256 and the sweep's edges.
import { afterAll, expect, test } from "bun:test";
import { decode, type DType, encode } from "../../lib/dtype";
import { openRuntime, type Runtime } from "../../lib/runtime";
import { type DecodeCase, runCase, tolerance } from "../../lib/testing/decode-check";
import { randomHalves, rng } from "../../lib/testing/pool";
import { nearestE4m3 } from "../support/fp8";
import { describeGpu } from "../support/gpu";

describeGpu("FP8 KV storage on the GPU", () => {
  let gpu: Runtime, cpu: Runtime;
  const runtimes = () => {
    gpu ??= openRuntime({ backend: "cuda" });
    cpu ??= openRuntime({ backend: "cpu" });
    return { gpu, cpu };
  };
  afterAll(() => {
    gpu?.dispose();
    cpu?.dispose();
  });

  // Writes the same rows ([n][heads][d] values) into an FP8 cache on each backend (host arrays, and on the
  // GPU also from device buffers); returns both raw reads and both value reads.
  const writeBoth = (queryDtype: DType, heads: number, d: number, k: Uint16Array, v: Uint16Array) => {
    const n = k.length / (heads * d);
    const results = [] as {
      raw: ReturnType<import("../../lib/kvcache").KVCache["readKVRaw"]>;
      values: { k: Uint16Array; v: Uint16Array };
    }[];
    for (const [rt, device] of [
      [runtimes().cpu, false],
      [runtimes().gpu, false],
      [runtimes().gpu, true],
    ] as const) {
      using cache = rt.createKVCache({
        numLayers: 1,
        numPages: Math.ceil(n / 16) + 1,
        pageSize: 16,
        numKvHeads: heads,
        headDim: d,
        dtype: "fp8_e4m3",
        queryDtype,
      });
      const seq = cache.createSequence();
      const slots = cache.append(seq, n);
      if (device) {
        using kb = rt.allocDevice(k.byteLength);
        using vb = rt.allocDevice(v.byteLength);
        kb.write(k);
        vb.write(v);
        cache.writeKV(0, slots, kb, vb);
      } else cache.writeKV(0, slots, k, v);
      results.push({ raw: cache.readKVRaw(0, seq), values: cache.readKV(0, seq) });
    }
    return results;
  };

  test("every f16 value of magnitude up to 448 converts as the host does (rows whose amax is 448: factor 1)", () => {
    const d = 128;
    // Each row: 448 first (so the row's factor is exactly 1 and codes are the hardware's conversion of the
    // values themselves), then 127 f16 values, NaNs included; infinities would change the row's amax.
    const values: number[] = [];
    for (let bits = 0; bits < 65536; bits++) {
      const x = decode("f16", Uint16Array.of(bits))[0]!;
      if (Number.isNaN(x) || Math.abs(x) <= 448) values.push(bits);
    }
    const rows = Math.ceil(values.length / (d - 1));
    const k = new Uint16Array(rows * d);
    for (let r = 0; r < rows; r++) {
      k[r * d] = encode("f16", [448])[0]!;
      for (let i = 1; i < d; i++) k[r * d + i] = values[(r * (d - 1) + i - 1) % values.length]!;
    }
    const [host, cuda, device] = writeBoth("f16", 1, d, k, k.slice());
    expect(cuda!.raw.kScales.every((s) => s === 1)).toBe(true);
    const f = decode("f16", k);
    const mismatches: string[] = [];
    for (let i = 0; i < k.length && mismatches.length < 5; i++) {
      const want = nearestE4m3(f[i]!);
      if (cuda!.raw.k[i] !== want || host!.raw.k[i] !== want)
        mismatches.push(
          `f16 0x${k[i]!.toString(16)}: gpu 0x${cuda!.raw.k[i]!.toString(16)}, cpu 0x${host!.raw.k[i]!.toString(16)}, want 0x${want.toString(16)}`,
        );
    }
    expect(mismatches).toEqual([]);
    expect(Array.from(device!.raw.k)).toEqual(Array.from(cuda!.raw.k));
  });

  test("random rows, outliers, zeros and subnormals: the same codes, scales and values on both backends", () => {
    const random = rng(21);
    for (const queryDtype of ["f16", "bf16"] as const)
      for (const d of [64, 128, 256]) {
        const heads = 3,
          n = 37,
          E = heads * d;
        const k = randomHalves(queryDtype, n * E, random, 3);
        const v = randomHalves(queryDtype, n * E, random, 1e-3);
        const huge = encode(queryDtype, [queryDtype === "bf16" ? 3e38 : 65504, -2e-7, 0])!;
        for (let t = 0; t < n; t++) k[t * E + (t % d)] = huge[t % 3]!; // outlier channels, tiny and zero values
        k.fill(0, 5 * E, 6 * E); // a token of zero rows
        const [host, cuda, device] = writeBoth(queryDtype, heads, d, k, v);
        for (const other of [cuda!, device!]) {
          expect(Array.from(other.raw.k)).toEqual(Array.from(host!.raw.k));
          expect(Array.from(other.raw.v)).toEqual(Array.from(host!.raw.v));
          expect(Array.from(other.raw.kScales)).toEqual(Array.from(host!.raw.kScales));
          expect(Array.from(other.raw.vScales)).toEqual(Array.from(host!.raw.vScales));
          expect(Array.from(other.values.k)).toEqual(Array.from(host!.values.k));
          expect(Array.from(other.values.v)).toEqual(Array.from(host!.values.v));
        }
      }
  });

  test("copy-on-write and swaps move codes and scales byte for byte", () => {
    const rt = runtimes().gpu;
    using cache = rt.createKVCache({
      numLayers: 2,
      numPages: 16,
      pageSize: 8,
      numKvHeads: 2,
      headDim: 64,
      dtype: "fp8_e4m3",
      swapPages: 8,
    });
    const random = rng(4);
    const seq = cache.createSequence();
    const slots = cache.append(seq, 21);
    for (let layer = 0; layer < 2; layer++)
      cache.writeKV(layer, slots, randomHalves("f16", 21 * 128, random, 2), randomHalves("f16", 21 * 128, random, 2));
    const raw = (s: typeof seq) => [0, 1].map((l) => cache.readKVRaw(l, s));
    const before = raw(seq);
    const child = cache.fork(seq);
    cache.writeKV(
      0,
      cache.append(child, 2),
      randomHalves("f16", 2 * 128, random),
      randomHalves("f16", 2 * 128, random),
    );
    const childRaw = raw(child);
    for (let l = 0; l < 2; l++) {
      expect(Array.from(childRaw[l]!.k.subarray(0, 21 * 128))).toEqual(Array.from(before[l]!.k));
      expect(Array.from(childRaw[l]!.vScales.subarray(0, 42))).toEqual(Array.from(before[l]!.vScales));
    }
    cache.release(child);
    cache.swapOut(seq);
    cache.swapIn(seq);
    expect(raw(seq)).toEqual(before);
  });

  // Both kernels against the reference on the pool's own quantized pages (TestPool reads them back).
  const check = (c: DecodeCase, device = false) => {
    for (const r of runCase(runtimes().gpu, c, ["baseline", "persistent"], device)) {
      expect({ policy: r.policy, unwritten: r.unwritten }).toEqual({ policy: r.policy, unwritten: 0 });
      expect(r.relError).toBeLessThan(tolerance(c.dtype, c.queryDtype));
      expect(r.lseError).toBeLessThan(2e-3);
    }
  };

  // Head dims 64 and 128 run the tensor-core body by default; each case there runs the CUDA-core body too.
  // At head dim 128 on sm_90+ the default loader is bulk copies, except on steps of short rows (all of these
  // cases), where it is cp.async: those cases run the bulk loader too, and the loaders elsewhere.
  const hopper = () => runtimes().gpu.info.computeCapability[0] >= 9;
  test("decode: every group size 1-16 over head dims 64/128/256 and page sizes 1-256, both bodies", () => {
    const dims = [64, 128, 256],
      pageSizes = [1, 2, 4, 8, 16, 32, 64, 128, 256];
    for (let g = 1; g <= 16; g++) {
      const d = dims[g % 3]!,
        ps = pageSizes[g % pageSizes.length]!;
      const c: DecodeCase = {
        group: g,
        numKvHeads: 1 + (g % 3),
        headDim: d,
        pageSize: ps,
        dtype: "fp8_e4m3",
        queryDtype: g % 2 ? "f16" : "bf16",
        // Length 1, page edges, split edges (64, 128), a partial last page, a few thousand tokens.
        lengths: [1, ps, ps + 1, 63, 64, 65, 127, 128, 129, 1500 + 37 * g],
        seed: 300 + g,
      };
      check(c, g % 2 === 0);
      if (d <= 128) check({ ...c, settings: { math: "cuda-cores" } }, g % 2 === 1);
      if (d === 128) check({ ...c, settings: { loader: hopper() ? "bulk" : "cp-async" } });
    }
  }, 300_000);

  test("decode: Llama shape (g4, d128, page 16) with long rows, and every page size at head dim 128", () => {
    check({
      group: 4,
      numKvHeads: 8,
      headDim: 128,
      pageSize: 16,
      dtype: "fp8_e4m3",
      lengths: [1, 15, 16, 17, 4000, 30000],
    });
    check({
      group: 4,
      numKvHeads: 8,
      headDim: 128,
      pageSize: 16,
      dtype: "fp8_e4m3",
      queryDtype: "bf16",
      lengths: [3, 20000],
    });
    for (const ps of [1, 2, 4, 8, 16, 32, 64, 128, 256])
      for (const loader of ["auto", "cp-async", ...(hopper() ? (["bulk"] as const) : [])] as const)
        check({
          group: 8,
          numKvHeads: 1,
          headDim: 128,
          pageSize: ps,
          dtype: "fp8_e4m3",
          lengths: [ps - 1 || 1, 3 * ps + 1, 2049],
          settings: { loader },
        });
  }, 300_000);

  test("decode: AUTO loads steps whose rows are all short with cp.async, others with bulk copies (sm_90+)", () => {
    const shape = { group: 4, numKvHeads: 2, headDim: 128, pageSize: 16, dtype: "fp8_e4m3" } as const;
    const loaders = (lengths: number[], settings?: DecodeCase["settings"]) =>
      runCase(runtimes().gpu, { ...shape, lengths, settings }).map((r) => {
        expect(r.unwritten).toBe(0);
        expect(r.relError).toBeLessThan(tolerance(shape.dtype));
        return r.loader;
      });
    const long = hopper() ? "bulk" : "cp-async";
    expect(loaders([4096, 300, 1])).toEqual(["cp-async", "cp-async"]);
    expect(loaders([4097, 5])).toEqual([long, long]);
    expect(loaders([100], { loader: "cp-async" })).toEqual(["cp-async", "cp-async"]);
    if (hopper()) expect(loaders([100], { loader: "bulk" })).toEqual(["bulk", "bulk"]);
  }, 120_000);

  test("decode: engine settings that force claiming and the dynamic tail onto small steps", () => {
    for (const settings of [{ claimMinTiles: 1 }, { tailMinSplits: 0 }, { tailMinSplits: 0, tailEndTiles: 0 }])
      check({
        group: 5,
        numKvHeads: 2,
        headDim: 64,
        pageSize: 16,
        dtype: "fp8_e4m3",
        lengths: [3, 900, 5000],
        settings,
      });
  }, 300_000);
});
