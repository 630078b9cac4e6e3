// GPU tests run only where a CUDA device is visible. Elsewhere they skip with the reason in their
// name, unless PKV_REQUIRE_GPU=1 (the GPU machine's setup sets it): then a missing device fails.
import { describe, test } from "bun:test";
import { cudaDeviceCount } from "../../lib/runtime";

export const gpuCount = cudaDeviceCount();
export const gpuRequired = process.env.PKV_REQUIRE_GPU === "1";

/** describe() for GPU-only tests. */
export function describeGpu(name: string, body: () => void): void {
  if (gpuCount > 0) describe(name, body);
  else if (gpuRequired)
    describe(name, () => {
      test("a CUDA device is visible (PKV_REQUIRE_GPU=1)", () => {
        throw new Error("PKV_REQUIRE_GPU=1 but no CUDA device is visible");
      });
    });
  else describe.skip(`${name} [skipped: no CUDA device visible]`, body);
}
