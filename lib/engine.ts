// The decode engine: `plan` once per step (page-table upload + workqueue), `run` once per layer.
import type { Pointer } from "bun:ffi";
import { NativeBuffer, streamHandle } from "./buffers";
import { check, outI32, outPointer } from "./ffi/call";
import { checkNativeSize, DECODE_CONFIG, ENGINE_SETTINGS, PLAN_INFO } from "./ffi/layouts";
import { native } from "./ffi/loader";
import { type DType, type KVDType, kvDtypeCode, valueDtype } from "./dtype";
import { InvalidArgumentError, OutOfRangeError, StalePlanError, Status } from "./errors";
import { NativeObject } from "./lifetime";
import type { Stream } from "./streams";
import type { KVPool } from "./interop/kvpool";
import { type CallerPageTable, planCallerTable } from "./interop/paged-plan";
import { BATCH_BUCKETS, NO_PREFERENCE, type PolicyTable, TOKEN_BUCKETS } from "./policy/table";
import type { DecodeKernel, DecodePolicy, RuntimeContext } from "./types";
import { INT32_MAX, checkCount, checkFinite, checkName, checkOptions, show } from "./validate";

export type { DecodeKernel, DecodePolicy } from "./types";

const POLICY_CODE: ReadonlyMap<string, number> = new Map([
  ["baseline", 0],
  ["persistent", 1],
  ["adaptive", 2],
]);
/**
 * The kernel a plan names: a decode kernel, or "multiquery" for a plan with rows on the multi-query
 * kernels (rows of more than 16 query rows, qLen x group, or any row of several queries where the decode
 * body is the CUDA-core one).
 */
export type PlanKernel = DecodeKernel | "multiquery";
const KERNEL_NAME: readonly PlanKernel[] = ["baseline", "persistent", "multiquery"];

const MATH_NAMES = ["auto", "cuda-cores", "tensor-cores"] as const;
const LOADER_NAMES = ["auto", "cp-async", "bulk"] as const;
const SHARED_PREFIX_NAMES = ["auto", "off", "always"] as const; // PKV_SHARED_* order
// The planner's counts among the engine settings (lib/ffi/layouts.ts ENGINE_SETTINGS).
const SETTINGS_COUNTS = ["tailPercent", "tailMinSplits", "tailEndTiles", "claimMinTiles"] as const;

/**
 * How the kernels compute and how the persistent planner cuts steps of few rows (pkv_engine_settings in
 * the C header). Every field is optional and defaults to the native library's measured best; the other
 * values serve comparisons (math, loader) and force a strategy onto small steps so that tests and
 * sanitizer runs exercise it (tailMinSplits 0, claimMinTiles 1).
 */
export interface EngineSettings {
  /** "auto" (default): tensor cores where headDim <= 128, CUDA cores otherwise. */
  math?: (typeof MATH_NAMES)[number];
  /** "auto" (default): bulk copies with tensor cores on sm_90+, 16-byte cp.async otherwise. */
  loader?: (typeof LOADER_NAMES)[number];
  /** Dynamic tail: percent (0-90) of a large few-row step's work pooled as small tasks; 0 turns it off (default 10). */
  tailPercent?: number;
  /** The tail applies at this many minimum splits (128 tokens) per block or more; 0: on every few-row step (default 32). */
  tailMinSplits?: number;
  /** Pipeline tiles the tail's last pieces shrink to; 0: even pieces (default 2). */
  tailEndTiles?: number;
  /** Claiming (splits of a row sharing its tiles) on few-row steps of at least this many tiles per block; 0: off (default 8). */
  claimMinTiles?: number;
  /**
   * Pages that several rows of a step hold (forks, prefix-cache hits) read once for all of them
   * (docs/shared-prefix.md): "auto" (default) where it pays, "off" for comparisons, "always" on every
   * run of shared pages (tests).
   */
  sharedPrefix?: (typeof SHARED_PREFIX_NAMES)[number];
}

function encodeSettings(settings: EngineSettings): Uint8Array {
  const defaults = ENGINE_SETTINGS.alloc();
  check(native().pkv_engine_settings_defaults(defaults), "pkv_engine_settings_defaults");
  const values = ENGINE_SETTINGS.decoder(defaults)();
  if (values.size !== ENGINE_SETTINGS.size)
    throw new Error(`pkv_engine_settings is ${values.size} bytes natively, ${ENGINE_SETTINGS.size} here`);
  const known = new Set<string>(["math", "loader", "sharedPrefix", ...SETTINGS_COUNTS]);
  for (const key of Object.keys(settings))
    if (!known.has(key))
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `settings.${key} is not an engine setting`);
  const code = (names: readonly string[], value: string | undefined, field: string, fallback: number) => {
    if (value === undefined) return fallback;
    const i = names.indexOf(value);
    if (i < 0)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `settings.${field} "${value}" is not ${names.map((n) => `"${n}"`).join(", ")}`,
      );
    return i;
  };
  values.math = code(MATH_NAMES, settings.math, "math", values.math);
  values.loader = code(LOADER_NAMES, settings.loader, "loader", values.loader);
  values.sharedPrefix = code(SHARED_PREFIX_NAMES, settings.sharedPrefix, "sharedPrefix", values.sharedPrefix);
  for (const name of SETTINGS_COUNTS) {
    const value = settings[name];
    if (value === undefined) continue;
    if (!Number.isInteger(value))
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `settings.${name} ${value} is not an integer`);
    values[name] = value;
  }
  return ENGINE_SETTINGS.encode(values);
}

function decodeSettings(bytes: Uint8Array): Required<EngineSettings> {
  const v = ENGINE_SETTINGS.decoder(bytes)();
  return {
    math: MATH_NAMES[v.math]!,
    loader: LOADER_NAMES[v.loader]!,
    tailPercent: v.tailPercent,
    tailMinSplits: v.tailMinSplits,
    tailEndTiles: v.tailEndTiles,
    claimMinTiles: v.claimMinTiles,
    sharedPrefix: SHARED_PREFIX_NAMES[v.sharedPrefix]!,
  };
}

export interface DecodeEngineOptions {
  numQoHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  /** The KV cache's storage dtype. */
  dtype: KVDType;
  /** q and out: the dtype itself for 16-bit caches; "f16" (default) or "bf16" with "fp8_e4m3". */
  queryDtype?: DType;
  /**
   * "adaptive" (default) picks a kernel per step from the batch's shape: the choice calibration measured on
   * this GPU for the step's (batch, total tokens) cell (`rt.calibrate`, loaded by `rt.createDecodeEngine`),
   * and where none was measured a built-in rule: persistent when (rows x KV heads) fill half a wave or
   * more, or when a step of 64K+ tokens has its longest row over twice the mean; baseline otherwise.
   */
  policy?: DecodePolicy;
  /** Most rows one plan may hold (default 256). */
  maxBatch?: number;
  /** Softmax scale (default 1/sqrt(headDim)). */
  smScale?: number;
  /** Kernel and planner settings (see EngineSettings); the defaults suit every shape. */
  settings?: EngineSettings;
}

/** What a plan needs from the KV cache: its native pool and each sequence's block-table row and length. */
export interface BatchSource<S> {
  readonly poolHandle: Pointer;
  /**
   * Fills rows[i] and lengths[i] for sequences[i]; throws a typed error for a sequence it cannot run.
   * May return a guard that says, at each run, whether the batch changed since (KVCache does).
   */
  // biome-ignore lint/suspicious/noConfusingVoidType: a source without staleness returns nothing at all
  describeBatch(sequences: readonly S[], rows: Int32Array, lengths: Int32Array): BatchGuard | void;
}

/** Tracks whether a planned batch still holds (KVCache's PlanGuard). */
export interface BatchGuard {
  /** Why the plan no longer describes its batch, or null while it does. Called once per run: keep it O(1). */
  staleness(): string | null;
}

/**
 * One step's workqueue. Valid until the engine's next plan, and only while its batch stays as planned:
 * appending to, releasing or swapping one of its sequences (anything that changes their pages or
 * lengths), or disposing the cache, makes run() throw StalePlanError. K/V writes do not.
 */
export class Plan {
  constructor(
    readonly engine: DecodeEngine,
    readonly id: number,
    readonly kernel: PlanKernel,
    readonly batch: number,
    readonly numTasks: number,
    readonly maxSplits: number,
    readonly grid: number,
    readonly totalTokens: number,
    readonly kvBytes: number,
    /** Rows of q and out: the sum of the rows' query lengths (the batch when each row has one). */
    readonly queryTokens: number = batch,
    /** Bytes of the distinct K/V pages one layer reads: kvBytes less what shared tasks read once. */
    readonly uniqueKvBytes: number = kvBytes,
    /** Shared-prefix tasks of the step (0: it shares nothing). */
    readonly sharedTasks: number = 0,
    /** Rows that read part of their context through shared tasks. */
    readonly sharedRows: number = 0,
    /** How the step's decode kernels load K/V ("auto" resolved: it can differ by step for FP8 pages). */
    readonly loader: "cp-async" | "bulk" = "cp-async",
  ) {}
}

/** Options of DecodeEngine.plan. */
export interface PlanOptions {
  policy?: DecodePolicy;
  /**
   * Query tokens of each sequence (1..its length; default 1 each): the newest qLens[i] tokens of
   * sequence i attend over its whole context, causally among themselves (speculative verification,
   * chunked prefill). q and out then hold [sum of qLens][numQoHeads][headDim], rows in sequence order.
   */
  qLens?: ArrayLike<number>;
}

export interface RunOptions {
  /** Device runs only: the stream to queue on (the runtime's own if none). */
  stream?: Stream;
  /** Device runs only: byte offsets into q, out and lse. */
  qOffset?: number;
  outOffset?: number;
  lseOffset?: number;
}

type Io = Uint16Array | NativeBuffer;

export class DecodeEngine extends NativeObject {
  readonly numQoHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly pageSize: number;
  readonly dtype: KVDType;
  /** The 16-bit type of q and out. */
  readonly queryDtype: DType;
  readonly policy: DecodePolicy;
  readonly maxBatch: number;
  readonly #rows: Int32Array;
  readonly #lengths: Int32Array;
  readonly #info = PLAN_INFO.alloc();
  readonly #readInfo = PLAN_INFO.decoder(this.#info);
  #current = 0;
  // The one plan run() accepts, and its guard: a newer plan, or any change to its batch, makes it stale.
  #latest: Plan | null = null;
  #guard: BatchGuard | null = null;
  #calibrated = false;

  constructor(runtime: RuntimeContext, options: DecodeEngineOptions) {
    const method = "createDecodeEngine";
    if (typeof options !== "object" || options === null)
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `${method}: options ${show(options)} is not an object`);
    const { dtype } = options;
    const [numQoHeads, numKvHeads, headDim, pageSize, maxBatch] = (
      [
        ["numQoHeads", options.numQoHeads],
        ["numKvHeads", options.numKvHeads],
        ["headDim", options.headDim],
        ["pageSize", options.pageSize],
        ["maxBatch", options.maxBatch ?? 256],
      ] as const
    ).map(([name, value]) => checkCount(method, name, value, 1, INT32_MAX)) as [number, number, number, number, number];
    const policy = options.policy ?? "adaptive";
    const policyCode = checkName(method, "policy", policy, POLICY_CODE);
    const smScale = checkFinite(method, "smScale", options.smScale ?? 0, 0);
    checkNativeSize(PLAN_INFO, native().pkv_plan_info_size());
    const config = DECODE_CONFIG.encode({
      numQoHeads,
      numKvHeads,
      headDim,
      pageSize,
      dtype: kvDtypeCode(dtype, options.queryDtype),
      policy: policyCode,
      maxBatch,
      smScale,
    });
    const settings = encodeSettings(options.settings ?? {});
    const handle = outPointer("pkv_decode_engine_create_with", (out) =>
      native().pkv_decode_engine_create_with(runtime.handle, config, null, settings, out),
    );
    super(handle, (h) => native().pkv_decode_engine_destroy(h), "decode engine", runtime);
    this.numQoHeads = numQoHeads;
    this.numKvHeads = numKvHeads;
    this.headDim = headDim;
    this.pageSize = pageSize;
    this.dtype = dtype;
    this.queryDtype = valueDtype(dtype, options.queryDtype);
    this.policy = policy;
    this.maxBatch = maxBatch;
    this.#rows = new Int32Array(maxBatch);
    this.#lengths = new Int32Array(maxBatch);
  }

  /** The settings this engine runs with: every field, "auto" resolved to the math and loader chosen. */
  get settings(): Required<EngineSettings> {
    const bytes = ENGINE_SETTINGS.alloc();
    check(native().pkv_decode_engine_settings(this.handle, bytes), "pkv_decode_engine_settings");
    return decodeSettings(bytes);
  }

  /** Whether the adaptive policy has a calibrated table (else the built-in rule decides everywhere). */
  get calibrated(): boolean {
    return this.#calibrated;
  }

  /** Loads a calibrated table into the adaptive policy; undefined clears it. */
  setPolicyTable(table: PolicyTable | undefined): void {
    const choices = table === undefined ? new Int8Array(0) : checkChoices(table);
    check(native().pkv_decode_set_policy_table(this.handle, choices, choices.length), "pkv_decode_set_policy_table");
    this.#calibrated = table !== undefined;
  }

  /** Builds the step's plan: uploads changed block-table entries and the workqueue. Never waits for the GPU. */
  plan<S>(cache: BatchSource<S>, sequences: readonly S[], options?: PlanOptions): Plan {
    const engine = this.handle;
    if (!Array.isArray(sequences))
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `plan: sequences ${show(sequences)} is not an array`);
    const batch = sequences.length;
    if (batch < 1 || batch > this.maxBatch)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `plan: batch of ${batch} sequences is not in 1..${this.maxBatch}`,
      );
    const { policy: name, qLens } = checkOptions("plan", options);
    const queryLengths = qLens === undefined ? null : this.#queryLengths(qLens, batch);
    const policy = name === undefined ? -1 : checkName("plan", "policy", name, POLICY_CODE);
    if (typeof cache !== "object" || cache === null || typeof cache.describeBatch !== "function")
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `plan: cache ${show(cache)} is not a KVCache`);
    // The whole arrays (the library reads `batch` entries): views of them would be two allocations a plan.
    const rows = this.#rows,
      lengths = this.#lengths;
    const guard = cache.describeBatch(sequences, rows, lengths) ?? null;
    const info = this.#info;
    if (queryLengths === null) {
      check(native().pkv_decode_plan(engine, cache.poolHandle, batch, rows, lengths, policy, info), "pkv_decode_plan");
      return this.#adopt(guard);
    }
    check(
      native().pkv_decode_plan_q(engine, cache.poolHandle, batch, rows, lengths, queryLengths, policy, info),
      "pkv_decode_plan_q",
    );
    const plan = this.#adopt(guard);
    const tokens = outI32("pkv_decode_plan_query_tokens", (out) =>
      native().pkv_decode_plan_query_tokens(engine, plan.id, out),
    );
    return this.#replaceLatest(plan, tokens);
  }

  // The plan's query lengths as the native call reads them (each 1..its length, checked natively).
  #queryLengths(qLens: ArrayLike<number>, batch: number): Int32Array {
    if (typeof qLens !== "object" || qLens === null || typeof qLens.length !== "number")
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `plan: qLens ${show(qLens)} is not an array of numbers`);
    if (qLens.length !== batch)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `plan: qLens has ${qLens.length} entries for ${batch} sequences`,
      );
    const out = new Int32Array(batch);
    for (let i = 0; i < batch; i++) out[i] = checkCount("plan", `qLens[${i}]`, qLens[i], 1, INT32_MAX);
    return out;
  }

  // The same plan with its query-token count (the native plan's, read once it exists).
  #replaceLatest(plan: Plan, queryTokens: number): Plan {
    const full = new Plan(
      this,
      plan.id,
      plan.kernel,
      plan.batch,
      plan.numTasks,
      plan.maxSplits,
      plan.grid,
      plan.totalTokens,
      plan.kvBytes,
      queryTokens,
      plan.uniqueKvBytes,
      plan.sharedTasks,
      plan.sharedRows,
      plan.loader,
    );
    this.#latest = full;
    return full;
  }

  /**
   * A plan from a page table the caller owns, over a pool of caller memory (KVPool.wrap): FlashInfer's
   * { indptr, indices, lastPageLen } or { blockTable, stride, seqLens }. The plan keeps a checked copy,
   * so later changes to the arrays change none of its runs.
   */
  planPaged(pool: KVPool, table: CallerPageTable, options?: { policy?: DecodePolicy }): Plan {
    const engine = this.handle;
    const { policy: name } = checkOptions("planPaged", options);
    const policy = name === undefined ? -1 : checkName("planPaged", "policy", name, POLICY_CODE);
    planCallerTable(engine, pool, table, policy, this.maxBatch, this.#info);
    return this.#adopt(null);
  }

  // The plan the native call just described in #info becomes the one run() accepts.
  #adopt(guard: BatchGuard | null): Plan {
    const p = this.#readInfo();
    this.#current = p.planId;
    const plan = new Plan(
      this,
      p.planId,
      KERNEL_NAME[p.kernel]!,
      p.batch,
      p.numTasks,
      p.maxSplits,
      p.grid,
      p.totalTokens,
      p.kvBytes,
      p.batch,
      p.uniqueKvBytes,
      p.sharedTasks,
      p.sharedRows,
      LOADER_NAMES[p.loader] === "bulk" ? "bulk" : "cp-async",
    );
    this.#latest = plan;
    this.#guard = guard;
    return plan;
  }

  /** Throws unless `plan` is this engine's latest plan and its batch is as it was planned. */
  #checkPlan(plan: Plan): void {
    if (plan !== this.#latest) {
      if (typeof plan !== "object" || plan === null)
        throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `run: ${show(plan)} is not a Plan`);
      if (plan.engine !== this)
        throw new InvalidArgumentError(Status.INVALID_ARGUMENT, "run: the plan belongs to another engine");
      if (plan.id !== this.#current)
        throw new StalePlanError(
          Status.STALE_PLAN,
          `run: plan ${plan.id} was replaced by plan ${this.#current}; plan the step again`,
        );
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `run: ${show(plan)} is not a Plan that plan() returned`);
    }
    const why = this.#guard?.staleness();
    if (why) throw new StalePlanError(Status.STALE_PLAN, `run: plan ${plan.id} is stale: ${why}; plan the step again`);
  }

  /**
   * Decode attention of one layer. q, out: [plan.queryTokens][numQoHeads][headDim] (one row per sequence
   * unless the plan has qLens) as Uint16Array bits (complete on return) or device buffers (queued on the
   * stream); lse (optional): float [plan.queryTokens][numQoHeads], natural log.
   */
  run(plan: Plan, layer: number, q: Io, out: Io, lse?: Float32Array | NativeBuffer, options?: RunOptions): void {
    const engine = this.handle;
    this.#checkPlan(plan);
    // The native side checks the layer against the pool; here only that it is an int32 (it would wrap).
    if (typeof layer !== "number" || !Number.isSafeInteger(layer))
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `run: layer ${show(layer)} is not an integer`);
    if (layer < 0 || layer > INT32_MAX)
      throw new OutOfRangeError(Status.OUT_OF_RANGE, `run: layer ${layer} is outside the pool's layers`);
    const { stream, qOffset = 0, outOffset = 0, lseOffset = 0 } = checkOptions("run", options);
    const rowsOfIo = plan.queryTokens;
    const elements = rowsOfIo * this.numQoHeads * this.headDim;
    if (q instanceof Uint16Array && out instanceof Uint16Array) {
      for (const [name, array] of [
        ["q", q],
        ["out", out],
      ] as const)
        if (array.length !== elements)
          throw new InvalidArgumentError(
            Status.INVALID_ARGUMENT,
            `${name} holds ${array.length} elements; [${rowsOfIo}][${this.numQoHeads}][${this.headDim}] needs ${elements}`,
          );
      if (lse !== undefined && !(lse instanceof Float32Array && lse.length === rowsOfIo * this.numQoHeads))
        throw new InvalidArgumentError(
          Status.INVALID_ARGUMENT,
          `lse must be a Float32Array of ${rowsOfIo * this.numQoHeads}`,
        );
      if (stream !== undefined || qOffset !== 0 || outOffset !== 0 || lseOffset !== 0)
        throw new InvalidArgumentError(
          Status.INVALID_ARGUMENT,
          "run: a stream and byte offsets apply to device buffers only",
        );
      check(
        native().pkv_decode_run(engine, plan.id, layer, q, out, (lse as Float32Array | undefined) ?? null),
        "pkv_decode_run",
      );
      return;
    }
    if (
      q instanceof NativeBuffer &&
      out instanceof NativeBuffer &&
      (lse === undefined || lse instanceof NativeBuffer)
    ) {
      check(
        native().pkv_decode_run_device(
          engine,
          plan.id,
          layer,
          q.handle,
          checkCount("run", "qOffset", qOffset),
          out.handle,
          checkCount("run", "outOffset", outOffset),
          lse?.handle ?? null,
          checkCount("run", "lseOffset", lseOffset),
          streamHandle("run", stream),
        ),
        "pkv_decode_run_device",
      );
      return;
    }
    throw new InvalidArgumentError(
      Status.INVALID_ARGUMENT,
      "run: q and out must both be Uint16Arrays (lse a Float32Array) or both device buffers (lse a buffer)",
    );
  }
}

/** The table's choices, if they are what the native policy takes: BATCH_BUCKETS x TOKEN_BUCKETS cells of -1, 0 or 1. */
function checkChoices(table: PolicyTable): Int8Array {
  const choices = (table as { choices?: unknown } | null)?.choices;
  const cells = BATCH_BUCKETS * TOKEN_BUCKETS;
  if (!(choices instanceof Int8Array) || choices.length !== cells)
    throw new InvalidArgumentError(
      Status.INVALID_ARGUMENT,
      `setPolicyTable: choices must be an Int8Array of ${cells} cells`,
    );
  const bad = choices.findIndex((c) => c < NO_PREFERENCE || c > 1);
  if (bad >= 0)
    throw new InvalidArgumentError(
      Status.INVALID_ARGUMENT,
      `setPolicyTable: cell ${bad} holds ${choices[bad]}, not -1, 0 or 1`,
    );
  return choices;
}
