// Model-based random test of the KV cache on the CPU backend: 100,000+ random operations against a plain
// TypeScript shadow (test/support/kvcache-model.ts says what is checked after every operation).
// Small pools and tables, so exhaustion, eviction and the row limit happen all the time.
import { expect, test } from "bun:test";
import { openRuntime } from "../lib/index.ts";
import { type ModelConfig, runModel } from "./support/kvcache-model.ts";
import { testSeed } from "./support/kvcache.ts";

const shape = { numLayers: 2, numKvHeads: 2, headDim: 64 };
export const MODEL_CONFIGS: ModelConfig[] = [
  { ...shape, pageSize: 1, numPages: 48, maxSequences: 8, maxPagesPerSequence: 20, swapPages: 24 },
  { ...shape, pageSize: 4, numPages: 32, maxSequences: 8, maxPagesPerSequence: 10, swapPages: 12 },
  { ...shape, pageSize: 16, numPages: 20, maxSequences: 6, maxPagesPerSequence: 6, swapPages: 8 },
];
const OPS_PER_CONFIG = Number(process.env.PKV_MODEL_OPS ?? 34_000); // 102,000 in all

test(`${OPS_PER_CONFIG * MODEL_CONFIGS.length} random operations match the shadow model (CPU)`, () => {
  const seed = testSeed("kvcache model (cpu)", 20261122);
  using rt = openRuntime({ backend: "cpu" });
  const started = performance.now();
  const counts = runModel(rt, MODEL_CONFIGS, OPS_PER_CONFIG, seed, 50);
  console.log(`${((performance.now() - started) / 1000).toFixed(1)} s`, counts);
  // Every kind of operation and outcome must have happened, or the test is not testing it.
  for (const what of [
    "create", "create (prefix hit)", "create (no row)", "append", "append (new pages)", "append (copy-on-write)",
    "append (too long)", "append (out of pages)", "write", "write (shared page)", "fork", "fork (no row)", "release",
    "release (swapped)", "swapOut", "swapOut (swap full)", "swapIn", "swapIn (no row)", "swapIn (out of pages)",
    "describeBatch", "describeBatch (swapped)", "misuse (released)", "misuse (swapped)", "misuse (other cache)",
  ])
    expect(counts[what] ?? 0, what).toBeGreaterThan(10);
}, 300_000);
