// The model-based random test of the KV cache (test/support/kvcache-model.ts) with FP8 pages on the CPU
// backend: the same operations and checks, with reads and attention predicted from the values' FP8 round
// trip (test/support/fp8.ts), so codes and scales must follow their pages through every copy and swap.
import { expect, test } from "bun:test";
import { openRuntime } from "../lib/index.ts";
import { MODEL_CONFIGS, MODEL_OUTCOMES, runModel } from "./support/kvcache-model.ts";
import { testSeed } from "./support/kvcache.ts";

const OPS_PER_CONFIG = Number(process.env.PKV_MODEL_OPS ?? 16_000);

test(`${OPS_PER_CONFIG * MODEL_CONFIGS.length} random operations on FP8 pages match the shadow model (CPU)`, () => {
  const seed = testSeed("kvcache model fp8 (cpu)", 20261202);
  using rt = openRuntime({ backend: "cpu" });
  const configs = MODEL_CONFIGS.map((c) => ({ ...c, dtype: "fp8_e4m3" as const }));
  const counts = runModel(rt, configs, OPS_PER_CONFIG, seed, 50);
  for (const what of MODEL_OUTCOMES) expect(counts[what] ?? 0, what).toBeGreaterThan(10);
}, 300_000);
