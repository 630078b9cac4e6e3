// Model-based random test of the KV cache on the CPU backend: 100,000+ random operations against a plain
// TypeScript shadow (test/support/kvcache-model.ts says what is checked after every operation).
// Small pools and tables, so exhaustion, eviction and the row limit happen all the time.
import { expect, test } from "bun:test";
import { openRuntime } from "../lib/index.ts";
import { MODEL_CONFIGS, MODEL_OUTCOMES, runModel } from "./support/kvcache-model.ts";
import { testSeed } from "./support/kvcache.ts";

const OPS_PER_CONFIG = Number(process.env.PKV_MODEL_OPS ?? 34_000); // 102,000 in all

test(`${OPS_PER_CONFIG * MODEL_CONFIGS.length} random operations match the shadow model (CPU)`, () => {
  const seed = testSeed("kvcache model (cpu)", 20261122);
  using rt = openRuntime({ backend: "cpu" });
  const started = performance.now();
  const counts = runModel(rt, MODEL_CONFIGS, OPS_PER_CONFIG, seed, 50);
  console.log(`${((performance.now() - started) / 1000).toFixed(1)} s`, counts);
  // Every kind of operation and outcome must have happened, or the test is not testing it.
  for (const what of MODEL_OUTCOMES) expect(counts[what] ?? 0, what).toBeGreaterThan(10);
}, 300_000);
