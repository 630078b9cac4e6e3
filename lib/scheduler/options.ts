// The Scheduler's options: checked, with their defaults filled in, before the scheduler holds anything.
// The compute of a step is a StepRunner given as `runner`, or built from `engine` and `model` (the host path).
import { InvalidArgumentError, Status } from "../errors";
import { INT32_MAX, checkCount, show } from "../validate";
import { HostStepRunner } from "./host-runner";
import type {
  ModelShape,
  PoolShape,
  SchedulerCache,
  SchedulerEngine,
  SchedulerPlan,
  SeqOf,
  Speculation,
  StepModel,
  StepRunner,
} from "./ports";

interface CommonOptions {
  /** Most requests decoded in one step (default 64, or the runner's or engine's capacity, which bounds it). */
  maxBatch?: number;
  /** Preempt by swapping while swap space lasts (default true); false always recomputes. */
  swap?: boolean;
  /**
   * Pages kept free when admitting while others run (default 1% of the pool, at least 1), so that
   * an admission does not force a preemption on the very next step.
   */
  watermarkPages?: number;
  /**
   * Chunked prefill (like vLLM's max_num_batched_tokens): a step's query tokens, decode rows (1 each)
   * and prompt chunks together, at most this many (at least maxBatch). Prompts (and the suffix after a
   * prefix hit) then run through the attention engine in chunks mixed with decode rows, instead of being
   * written whole at admission. Needs a runner with decodeChunks (the host runner has it). Default: off.
   */
  maxBatchedTokens?: number;
  /**
   * Speculative decoding: a draft source whose guesses each decode row verifies in one multi-query row
   * per step; rejected drafts are rolled back (cache.truncate). Needs a runner with decodeChunks and a
   * cache with truncate. Default: off.
   */
  speculate?: Speculation;
}

/** A runner of the caller's (the device path, or any other): the scheduler only decides who runs. */
// biome-ignore lint/suspicious/noExplicitAny: any sequence type; the Scheduler never looks inside it
export interface RunnerOptions<C extends SchedulerCache<any>> extends CommonOptions {
  cache: C;
  runner: StepRunner<SeqOf<NoInfer<C>>>;
  /** Default: read from the cache's config (KVCache has it). */
  shape?: PoolShape;
  engine?: never;
  model?: never;
}

/** The host path: the scheduler builds a HostStepRunner over the engine and the model. */
// biome-ignore lint/suspicious/noExplicitAny: any sequence type; the Scheduler never looks inside it
export interface HostOptions<C extends SchedulerCache<any>, P extends SchedulerPlan> extends CommonOptions {
  cache: C;
  engine: SchedulerEngine<NoInfer<C>, SeqOf<NoInfer<C>>, P>; // C comes from the cache alone
  model: StepModel;
  /** Default: read from the cache's config and the engine's numQoHeads (KVCache and DecodeEngine have both). */
  shape?: ModelShape;
  runner?: never;
}

// biome-ignore lint/suspicious/noExplicitAny: any sequence type; the Scheduler never looks inside it
export type SchedulerOptions<C extends SchedulerCache<any>, P extends SchedulerPlan> =
  | RunnerOptions<C>
  | HostOptions<C, P>;

// biome-ignore lint/suspicious/noExplicitAny: any sequence type; the Scheduler never looks inside it
export interface ResolvedOptions<C extends SchedulerCache<any>> {
  cache: C;
  runner: StepRunner<SeqOf<C>>;
  shape: Required<PoolShape>;
  maxBatch: number;
  swap: boolean;
  watermark: number;
  maxBatchedTokens: number | null;
  speculate: Speculation | null;
}

const bad = (message: string) => new InvalidArgumentError(Status.INVALID_ARGUMENT, `Scheduler: ${message}`);

function checkMethods(name: string, value: unknown, methods: readonly string[]): void {
  for (const method of methods)
    if (typeof (value as Record<string, unknown> | null)?.[method] !== "function")
      throw bad(`${name} ${show(value)} has no ${method}() method`);
}

// biome-ignore lint/suspicious/noExplicitAny: any sequence type; the Scheduler never looks inside it
export function resolveOptions<C extends SchedulerCache<any>, P extends SchedulerPlan>(
  options: SchedulerOptions<C, P>,
): ResolvedOptions<C> {
  if (typeof options !== "object" || options === null) throw bad("options must be an object");
  const { cache } = options;
  checkMethods("cache", cache, ["createSequence", "append", "release", "swapOut", "swapIn", "stats"]);
  const host = options.runner === undefined;
  if (!host && (options.engine !== undefined || options.model !== undefined))
    throw bad("pass either runner, or engine and model, not both");
  if (!host) checkMethods("runner", options.runner, ["prefill", "decode"]);
  else {
    checkMethods("cache", cache, ["writeKV"]);
    checkMethods("engine", options.engine, ["plan", "run"]);
    checkMethods("model", options.model, ["prefill", "forward", "sample"]);
  }
  const capacity = host ? (options.engine as { maxBatch?: unknown }).maxBatch : options.runner!.maxBatch;
  const shape = host
    ? checkShape(options.shape ?? modelShapeOf(cache, options.engine), true)
    : checkShape(options.shape ?? poolShapeOf(cache), false);
  // The runner's (or engine's) capacity bounds the batch: a larger one would fail every step.
  const limit = typeof capacity === "number" ? capacity : INT32_MAX;
  const maxBatch = checkCount(
    "Scheduler",
    "maxBatch",
    options.maxBatch ?? (typeof capacity === "number" ? capacity : 64),
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
  const sized = host ? options.model! : options.runner!;
  if (sized.maxContext !== undefined)
    checkCount("Scheduler", `${host ? "model" : "runner"}.maxContext`, sized.maxContext, 1);
  if (sized.vocab !== undefined)
    checkCount("Scheduler", `${host ? "model" : "runner"}.vocab`, sized.vocab, 1, INT32_MAX + 1);
  const runner = host
    ? new HostStepRunner({
        cache: cache as C & Required<Pick<SchedulerCache<SeqOf<C>>, "writeKV">>,
        engine: options.engine!,
        model: options.model!,
        shape: shape as Required<ModelShape>,
        maxBatch,
      })
    : options.runner!;
  let maxBatchedTokens: number | null = null;
  if (options.maxBatchedTokens !== undefined) {
    maxBatchedTokens = checkCount("Scheduler", "maxBatchedTokens", options.maxBatchedTokens, maxBatch, INT32_MAX);
    if (typeof runner.decodeChunks !== "function") throw bad("maxBatchedTokens needs a runner with decodeChunks()");
  }
  const speculate = options.speculate ?? null;
  if (speculate !== null) {
    if (typeof speculate !== "object" || typeof speculate.draft !== "function")
      throw bad(`speculate ${show(speculate)} has no draft() method`);
    checkCount("Scheduler", "speculate.maxDraftTokens", speculate.maxDraftTokens, 1, 64);
    if (typeof runner.decodeChunks !== "function") throw bad("speculate needs a runner with decodeChunks()");
    checkMethods("cache", cache, ["truncate"]);
  }
  return { cache, runner, shape, maxBatch, swap: options.swap ?? true, watermark, maxBatchedTokens, speculate };
}

/** Every size a count, maxPagesPerSequence defaulted to the pool; the model's sizes too on the host path. */
function checkShape(given: ModelShape | PoolShape, model: boolean): Required<PoolShape> {
  const names = model
    ? (["numLayers", "numQoHeads", "numKvHeads", "headDim", "pageSize", "numPages"] as const)
    : (["pageSize", "numPages"] as const);
  for (const name of names)
    checkCount("Scheduler", `shape.${name}`, (given as Partial<ModelShape>)[name], 1, INT32_MAX);
  const maxPages = checkCount(
    "Scheduler",
    "shape.maxPagesPerSequence",
    given.maxPagesPerSequence ?? given.numPages,
    1,
    INT32_MAX,
  );
  return { ...given, maxPagesPerSequence: maxPages };
}

type CacheConfig = Omit<ModelShape, "numQoHeads">;

function configOf(cache: unknown, what: string): CacheConfig {
  const config = (cache as { config?: CacheConfig }).config;
  if (!config) throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `Scheduler: pass \`shape\` (${what})`);
  return config;
}

/** The pool geometry a KVCache's config carries. */
function poolShapeOf(cache: unknown): PoolShape {
  const { pageSize, numPages, maxPagesPerSequence } = configOf(cache, "the cache has no config");
  return { pageSize, numPages, maxPagesPerSequence };
}

/** The sizes a KVCache (config) and a DecodeEngine (numQoHeads) carry. */
function modelShapeOf(cache: unknown, engine: unknown): ModelShape {
  const numQoHeads = (engine as { numQoHeads?: number }).numQoHeads;
  const why = "the cache has no config or the engine no numQoHeads";
  if (numQoHeads === undefined)
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `Scheduler: pass \`shape\` (${why})`);
  const { numLayers, numKvHeads, headDim, pageSize, numPages, maxPagesPerSequence } = configOf(cache, why);
  return { numLayers, numQoHeads, numKvHeads, headDim, pageSize, numPages, maxPagesPerSequence };
}
