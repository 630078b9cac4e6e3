// The serving stack the examples, the serving benchmark and the tests share: a KV cache, a decode
// engine, the synthetic model and a Scheduler over them, sized for the backend at hand. The step runs
// on the host path (HostStepRunner) unless `runner` builds another one (the device path) from the parts.
import type { DType } from "../dtype";
import type { DecodeEngine, Plan } from "../engine";
import type { KVCache, Sequence } from "../kvcache";
import type { Runtime } from "../runtime";
import { Scheduler } from "../scheduler";
import type { ModelShape, StepRunner } from "./ports";
import { SyntheticModel } from "./synthetic";

export interface DemoSizes extends Omit<ModelShape, "maxPagesPerSequence"> {
  /** Pages of pinned host swap space; 0 preempts by recompute only. */
  swapPages: number;
  maxBatch: number;
  dtype: DType;
}

/** Small enough that every example and test runs in seconds on the CPU reference backend. */
export const CPU_SIZES: DemoSizes = {
  numLayers: 2,
  numQoHeads: 8,
  numKvHeads: 2,
  headDim: 64,
  pageSize: 16,
  numPages: 512,
  swapPages: 128,
  maxBatch: 32,
  dtype: "f16",
};

/** Llama-3-8B-like shape; 8192 pages x 32 layers x 64 KiB = 16 GiB of KV, 4 GiB of pinned swap. */
export const GPU_SIZES: DemoSizes = {
  numLayers: 32,
  numQoHeads: 32,
  numKvHeads: 8,
  headDim: 128,
  pageSize: 16,
  numPages: 8192,
  swapPages: 2048,
  maxBatch: 128,
  dtype: "f16",
};

export function sizesFor(rt: Runtime, overrides: Partial<DemoSizes> = {}): DemoSizes {
  return { ...(rt.backend === "cuda" ? GPU_SIZES : CPU_SIZES), ...overrides };
}

/** What a runner factory gets: the stack's parts, built and sized. */
export interface DemoParts {
  rt: Runtime;
  cache: KVCache;
  engine: DecodeEngine;
  model: SyntheticModel;
  sizes: DemoSizes;
}

/** A runner the stack owns: disposed (if it has dispose) when the stack closes, before the engine and cache. */
export type DemoRunner = StepRunner<Sequence> & { dispose?(): void };

export interface DemoOptions {
  policy?: "baseline" | "persistent" | "adaptive";
  swap?: boolean;
  watermarkPages?: number;
  /** Builds the step's runner from the parts (default: the host path over the engine and the model). */
  runner?: (parts: DemoParts) => DemoRunner;
}

export interface DemoStack {
  scheduler: Scheduler<KVCache, Plan>;
  cache: KVCache;
  engine: DecodeEngine;
  model: SyntheticModel;
  sizes: DemoSizes;
  /** Cancels every request and frees the cache and the engine (not the runtime). */
  close(): Promise<void>;
}

export function createDemoStack(rt: Runtime, sizes: DemoSizes, options: DemoOptions = {}): DemoStack {
  const { numLayers, numQoHeads, numKvHeads, headDim, pageSize, numPages, swapPages, maxBatch, dtype } = sizes;
  const maxPagesPerSequence = numPages;
  const cache = rt.createKVCache({
    numLayers,
    numPages,
    pageSize,
    numKvHeads,
    headDim,
    dtype,
    maxSequences: 4 * maxBatch, // running plus preempted (swapped sequences keep their row)
    maxPagesPerSequence,
    swapPages,
  });
  let engine: DecodeEngine | undefined;
  let runner: DemoRunner | undefined;
  let scheduler: Scheduler<KVCache, Plan>;
  const model = new SyntheticModel({ numLayers, numQoHeads, numKvHeads, headDim, dtype });
  try {
    engine = rt.createDecodeEngine({
      numQoHeads,
      numKvHeads,
      headDim,
      pageSize,
      dtype,
      policy: options.policy ?? "adaptive",
      maxBatch,
    });
    const common = { maxBatch, swap: options.swap ?? swapPages > 0, watermarkPages: options.watermarkPages };
    runner = options.runner?.({ rt, cache, engine, model, sizes });
    scheduler = runner
      ? new Scheduler<KVCache, Plan>({ cache, runner, ...common })
      : new Scheduler({ cache, engine, model, ...common });
  } catch (error) {
    // Refused sizes or options leave nothing behind.
    runner?.dispose?.();
    engine?.dispose();
    cache.dispose();
    throw error;
  }
  return {
    scheduler,
    cache,
    engine,
    model,
    sizes,
    async close() {
      await scheduler.close();
      runner?.dispose?.();
      engine!.dispose();
      cache.dispose();
    },
  };
}
