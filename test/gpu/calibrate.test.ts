// Calibration on the GPU: small runs (few tokens, few rounds) of the shapes whose pools used to fail, and
// the stored table found only by engines of the settings it was measured with.
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InvalidArgumentError } from "../../lib/errors";
import { openRuntime, type Runtime } from "../../lib/runtime";
import type { ModelShape } from "../../lib/policy/sizing";
import { describeGpu } from "../support/gpu";

describeGpu("calibration on the GPU", () => {
  let rt: Runtime;
  const runtime = () => (rt ??= openRuntime({ backend: "cuda" }));
  const dir = mkdtempSync(join(tmpdir(), "pkv-calibrate-"));
  const saved = process.env.PKV_CACHE_DIR;
  process.env.PKV_CACHE_DIR = dir;
  afterAll(() => {
    rt?.dispose();
    if (saved === undefined) delete process.env.PKV_CACHE_DIR;
    else process.env.PKV_CACHE_DIR = saved;
    rmSync(dir, { recursive: true, force: true });
  });
  const quick = { maxTokens: 2 ** 15, rounds: 3 };

  const shapes: ModelShape[] = [
    { numQoHeads: 32, numKvHeads: 8, headDim: 128, pageSize: 1, dtype: "f16" },
    { numQoHeads: 32, numKvHeads: 8, headDim: 128, pageSize: 256, dtype: "bf16" },
    { numQoHeads: 16, numKvHeads: 16, headDim: 256, pageSize: 16, dtype: "f16" },
    { numQoHeads: 48, numKvHeads: 3, headDim: 64, pageSize: 2, dtype: "bf16" },
  ];
  for (const shape of shapes)
    test(`${shape.numQoHeads}/${shape.numKvHeads}x${shape.headDim}, page ${shape.pageSize}, ${shape.dtype}`, () => {
      const { table } = runtime().calibrate(shape, quick);
      expect(table.measurements.length).toBeGreaterThan(10);
      for (const cell of table.measurements) {
        expect(cell.steps.length).toBe(cell.batch > 1 ? 2 : 1);
        for (const step of cell.steps) {
          expect(step.rounds).toBe(3);
          expect(step.baselineUs).toBeGreaterThan(0);
          expect(step.persistentUs).toBeGreaterThan(0);
          expect(step.spread).toBeGreaterThanOrEqual(0);
        }
      }
    });

  test("the table is stored for the settings measured: a CUDA-core engine does not load a tensor-core table", () => {
    const shape = { numQoHeads: 32, numKvHeads: 8, headDim: 128, pageSize: 16, dtype: "f16" as const };
    const r = runtime();
    const tensor = r.calibrate(shape, { ...quick, settings: { math: "tensor-cores" } });
    const cores = r.calibrate(shape, { ...quick, settings: { math: "cuda-cores" } });
    expect(cores.path).not.toBe(tensor.path);
    using onCores = r.createDecodeEngine({ ...shape, settings: { math: "cuda-cores" } });
    using onTensor = r.createDecodeEngine({ ...shape, settings: { math: "tensor-cores" } });
    using byDefault = r.createDecodeEngine({ ...shape, settings: { claimMinTiles: 1 } });
    expect(onCores.calibrated).toBe(true);
    expect(onTensor.calibrated).toBe(true);
    expect(byDefault.calibrated).toBe(false); // a planner threshold no table was measured with
  });

  test("bad settings are refused before anything is measured", () => {
    expect(() =>
      runtime().calibrate(
        { numQoHeads: 8, numKvHeads: 8, headDim: 64, pageSize: 16, dtype: "f16" },
        { ...quick, settings: { math: "abacus" as never } },
      ),
    ).toThrow(InvalidArgumentError);
  });
});
