// The Scheduler's options: checked, with their defaults filled in, before the scheduler holds anything.
import { InvalidArgumentError, Status } from "../errors";
import { INT32_MAX, checkCount, show } from "../validate";
import type { ModelShape, SchedulerCache, SchedulerEngine, SchedulerPlan, SeqOf, StepModel } from "./ports";

// biome-ignore lint/suspicious/noExplicitAny: any sequence type; the Scheduler never looks inside it
export interface SchedulerOptions<C extends SchedulerCache<any>, P extends SchedulerPlan> {
  cache: C;
  engine: SchedulerEngine<NoInfer<C>, SeqOf<NoInfer<C>>, P>; // C comes from the cache alone
  model: StepModel;
  /** Default: read from the cache's config and the engine's numQoHeads (KVCache and DecodeEngine have both). */
  shape?: ModelShape;
  /** Most requests decoded in one step (default 64; the engine's plan capacity bounds it). */
  maxBatch?: number;
  /** Preempt by swapping while swap space lasts (default true); false always recomputes. */
  swap?: boolean;
  /**
   * Pages kept free when admitting while others run (default 1% of the pool, at least 1), so that
   * an admission does not force a preemption on the very next step.
   */
  watermarkPages?: number;
}

// biome-ignore lint/suspicious/noExplicitAny: any sequence type; the Scheduler never looks inside it
export interface ResolvedOptions<C extends SchedulerCache<any>, P extends SchedulerPlan> {
  cache: C;
  engine: SchedulerEngine<C, SeqOf<C>, P>;
  model: StepModel;
  shape: Required<ModelShape>;
  maxBatch: number;
  swap: boolean;
  watermark: number;
}

// biome-ignore lint/suspicious/noExplicitAny: any sequence type; the Scheduler never looks inside it
export function resolveOptions<C extends SchedulerCache<any>, P extends SchedulerPlan>(
  options: SchedulerOptions<C, P>,
): ResolvedOptions<C, P> {
  const bad = (message: string) => new InvalidArgumentError(Status.INVALID_ARGUMENT, `Scheduler: ${message}`);
  if (typeof options !== "object" || options === null) throw bad("options must be an object");
  const { cache, engine, model } = options;
  for (const [name, value, methods] of [
    ["cache", cache, ["createSequence", "append", "writeKV", "release", "swapOut", "swapIn", "stats"]],
    ["engine", engine, ["plan", "run"]],
    ["model", model, ["prefill", "forward", "sample"]],
  ] as const)
    for (const method of methods)
      if (typeof (value as Record<string, unknown> | null)?.[method] !== "function")
        throw bad(`${name} ${show(value)} has no ${method}() method`);
  const given = options.shape ?? shapeOf(cache, engine);
  for (const name of ["numLayers", "numQoHeads", "numKvHeads", "headDim", "pageSize", "numPages"] as const)
    checkCount("Scheduler", `shape.${name}`, given[name], 1, INT32_MAX);
  const maxPages = checkCount(
    "Scheduler",
    "shape.maxPagesPerSequence",
    given.maxPagesPerSequence ?? given.numPages,
    1,
    INT32_MAX,
  );
  const shape = { ...given, maxPagesPerSequence: maxPages };
  // The engine's plan capacity bounds the batch: a larger one would fail every step's plan.
  const engineMax = (engine as { maxBatch?: unknown }).maxBatch;
  const limit = typeof engineMax === "number" ? engineMax : INT32_MAX;
  const maxBatch = checkCount(
    "Scheduler",
    "maxBatch",
    options.maxBatch ?? (typeof engineMax === "number" ? engineMax : 64),
    1,
    limit,
  );
  if (options.swap !== undefined && typeof options.swap !== "boolean")
    throw bad(`swap ${show(options.swap)} is not a boolean`);
  const watermark = checkCount(
    "Scheduler",
    "watermarkPages",
    options.watermarkPages ?? Math.max(1, Math.ceil(shape.numPages / 100)),
    0,
    shape.numPages,
  );
  if (model.maxContext !== undefined) checkCount("Scheduler", "model.maxContext", model.maxContext, 1);
  if (model.vocab !== undefined) checkCount("Scheduler", "model.vocab", model.vocab, 1, INT32_MAX + 1);
  return { cache, engine, model, shape, maxBatch, swap: options.swap ?? true, watermark };
}

/** The sizes a KVCache (config) and a DecodeEngine (numQoHeads) carry. */
function shapeOf(cache: unknown, engine: unknown): ModelShape {
  const config = (cache as { config?: Omit<ModelShape, "numQoHeads"> }).config;
  const numQoHeads = (engine as { numQoHeads?: number }).numQoHeads;
  if (!config || numQoHeads === undefined)
    throw new InvalidArgumentError(
      Status.INVALID_ARGUMENT,
      "Scheduler: pass `shape` (the cache has no config or the engine no numQoHeads)",
    );
  const { numLayers, numKvHeads, headDim, pageSize, numPages, maxPagesPerSequence } = config;
  return { numLayers, numQoHeads, numKvHeads, headDim, pageSize, numPages, maxPagesPerSequence };
}
