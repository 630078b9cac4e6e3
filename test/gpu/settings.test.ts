// Every kernel body and every forced planner strategy on the GPU, chosen in-process through engine
// settings: the CUDA-core body, the tensor-core body with each loader, claiming and the dynamic tail
// (even and shrinking pieces) forced onto a step they would not take by default.
import { afterAll, expect, test } from "bun:test";
import { DecodeEngine, type EngineSettings } from "../../lib/engine";
import { UnsupportedError } from "../../lib/errors";
import { openRuntime, type Runtime } from "../../lib/runtime";
import { type DecodeCase, runCase, tolerance } from "../../lib/testing/decode-check";
import { describeGpu } from "../support/gpu";

describeGpu("engine settings on the GPU", () => {
  let rt: Runtime;
  const runtime = () => (rt ??= openRuntime({ backend: "cuda" }));
  afterAll(() => rt?.dispose());
  const hopper = () => runtime().info.computeCapability[0] >= 9;

  const check = (c: DecodeCase, device = false) => {
    for (const r of runCase(runtime(), c, ["baseline", "persistent"], device)) {
      expect({ policy: r.policy, unwritten: r.unwritten }).toEqual({ policy: r.policy, unwritten: 0 });
      expect(r.relError).toBeLessThan(tolerance(c.dtype));
      expect(r.lseError).toBeLessThan(2e-3);
    }
  };
  const small: DecodeCase = {
    group: 4,
    numKvHeads: 2,
    headDim: 128,
    pageSize: 16,
    dtype: "f16",
    lengths: [1, 17, 700, 3000],
  };
  // Over one tile per block of any H100/H200 wave at 2 KV heads: claiming and the tail can both be forced.
  const long: DecodeCase = {
    group: 5,
    numKvHeads: 2,
    headDim: 64,
    pageSize: 16,
    dtype: "bf16",
    lengths: [1, 17, 700, 40000],
  };

  test("auto resolves to tensor cores (bulk copies on sm_90+) up to head dim 128, CUDA cores at 256", () => {
    const rt = runtime();
    using engine = new DecodeEngine(rt, { numQoHeads: 8, numKvHeads: 2, headDim: 128, pageSize: 16, dtype: "f16" });
    expect(engine.settings).toMatchObject({ math: "tensor-cores", loader: hopper() ? "bulk" : "cp-async" });
    using wide = new DecodeEngine(rt, { numQoHeads: 8, numKvHeads: 2, headDim: 256, pageSize: 16, dtype: "f16" });
    expect(wide.settings).toMatchObject({ math: "cuda-cores", loader: "cp-async" });
  });

  const bodies: EngineSettings[] = [
    { math: "cuda-cores" },
    { math: "tensor-cores", loader: "cp-async" },
    { math: "tensor-cores", loader: "bulk" },
  ];
  for (const settings of bodies)
    test(`the ${settings.math} body with ${settings.loader ?? "its"} loader matches the reference`, () => {
      if (settings.loader === "bulk" && !hopper()) {
        expect(() => runCase(runtime(), { ...small, settings })).toThrow(UnsupportedError);
        return;
      }
      check({ ...small, settings });
      check({ ...long, settings }, true);
    });

  const strategies: [string, EngineSettings][] = [
    ["claiming", { tailPercent: 0, claimMinTiles: 1 }],
    ["the dynamic tail, even pieces", { tailMinSplits: 0, tailEndTiles: 0 }],
    ["the dynamic tail, shrinking pieces", { tailMinSplits: 0 }],
    ["neither (balanced waves)", { tailPercent: 0, claimMinTiles: 0 }],
  ];
  for (const [name, settings] of strategies)
    test(`${name}, forced, matches the reference on every body`, () => {
      for (const body of hopper() ? bodies : bodies.slice(0, 2)) {
        check({ ...long, settings: { ...body, ...settings } });
        check({ ...small, settings: { ...body, ...settings } }, true);
      }
    });
});
