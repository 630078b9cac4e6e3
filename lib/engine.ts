// The decode engine: `plan` once per step (page-table upload + workqueue), `run` once per layer.
import type { Pointer } from "bun:ffi";
import { NativeBuffer } from "./buffers";
import { check, outPointer } from "./ffi/call";
import { native } from "./ffi/loader";
import { dtypeCode, type DType } from "./dtype";
import { InvalidArgumentError, StalePlanError, Status } from "./errors";
import { NativeObject } from "./lifetime";
import type { Runtime } from "./runtime";
import type { Stream } from "./streams";
import type { PolicyTable } from "./policy/table";

export type DecodePolicy = "baseline" | "persistent" | "adaptive";
export type DecodeKernel = "baseline" | "persistent";

const POLICY_CODE: Record<DecodePolicy, number> = { baseline: 0, persistent: 1, adaptive: 2 };
const KERNEL_NAME: readonly DecodeKernel[] = ["baseline", "persistent"];
const CONFIG_BYTES = 32;
const PLAN_INFO_BYTES = 40;
const SETTINGS_BYTES = 32;

const MATH_NAMES = ["auto", "cuda-cores", "tensor-cores"] as const;
const LOADER_NAMES = ["auto", "cp-async", "bulk"] as const;
// pkv_engine_settings after its size, math and loader fields: the planner's counts, in header order.
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
}

function encodeSettings(settings: EngineSettings): Uint8Array {
  const bytes = new Uint8Array(SETTINGS_BYTES);
  check(native().pkv_engine_settings_defaults(bytes), "pkv_engine_settings_defaults");
  const view = new DataView(bytes.buffer);
  if (view.getInt32(0, true) !== SETTINGS_BYTES)
    throw new Error(`pkv_engine_settings is ${view.getInt32(0, true)} bytes natively, ${SETTINGS_BYTES} here`);
  const known = new Set<string>(["math", "loader", ...SETTINGS_COUNTS]);
  for (const key of Object.keys(settings))
    if (!known.has(key)) throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `settings.${key} is not an engine setting`);
  const pick = (names: readonly string[], value: string | undefined, field: string, offset: number) => {
    if (value === undefined) return;
    const code = names.indexOf(value);
    if (code < 0)
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `settings.${field} "${value}" is not ${names.map((n) => `"${n}"`).join(", ")}`);
    view.setInt32(offset, code, true);
  };
  pick(MATH_NAMES, settings.math, "math", 4);
  pick(LOADER_NAMES, settings.loader, "loader", 8);
  SETTINGS_COUNTS.forEach((name, i) => {
    const value = settings[name];
    if (value === undefined) return;
    if (!Number.isInteger(value))
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `settings.${name} ${value} is not an integer`);
    view.setInt32(12 + 4 * i, value, true);
  });
  return bytes;
}

function decodeSettings(bytes: Uint8Array): Required<EngineSettings> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const counts = Object.fromEntries(SETTINGS_COUNTS.map((name, i) => [name, view.getInt32(12 + 4 * i, true)]));
  return {
    math: MATH_NAMES[view.getInt32(4, true)]!,
    loader: LOADER_NAMES[view.getInt32(8, true)]!,
    ...(counts as Record<(typeof SETTINGS_COUNTS)[number], number>),
  };
}

export interface DecodeEngineOptions {
  numQoHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  dtype: DType;
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
  /** Fills rows[i] and lengths[i] for sequences[i]; throws a typed error for a sequence it cannot run. */
  describeBatch(sequences: readonly S[], rows: Int32Array, lengths: Int32Array): void;
}

/** One step's workqueue; valid until the engine's next plan. */
export class Plan {
  constructor(
    readonly engine: DecodeEngine,
    readonly id: number,
    readonly kernel: DecodeKernel,
    readonly batch: number,
    readonly numTasks: number,
    readonly maxSplits: number,
    readonly grid: number,
    readonly totalTokens: number,
    readonly kvBytes: number,
  ) {}
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
  readonly dtype: DType;
  readonly policy: DecodePolicy;
  readonly maxBatch: number;
  readonly #rows: Int32Array;
  readonly #lengths: Int32Array;
  readonly #info = new Uint8Array(PLAN_INFO_BYTES);
  #current = 0;
  #calibrated = false;

  constructor(runtime: Runtime, options: DecodeEngineOptions) {
    const { numQoHeads, numKvHeads, headDim, pageSize, dtype } = options;
    const policy = options.policy ?? "adaptive";
    const maxBatch = options.maxBatch ?? 256;
    const smScale = options.smScale ?? 0;
    for (const [name, value] of Object.entries({ numQoHeads, numKvHeads, headDim, pageSize, maxBatch }))
      if (!Number.isInteger(value) || value < 1)
        throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `${name} ${value} is not a positive integer`);
    if (!(policy in POLICY_CODE))
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `policy "${policy}" is not "baseline", "persistent" or "adaptive"`);
    if (!Number.isFinite(smScale) || smScale < 0)
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `smScale ${smScale} is not a finite value >= 0`);
    if (native().pkv_plan_info_size() !== PLAN_INFO_BYTES)
      throw new Error(`pkv_plan_info is ${native().pkv_plan_info_size()} bytes natively, ${PLAN_INFO_BYTES} here`);
    const config = new DataView(new ArrayBuffer(CONFIG_BYTES));
    [numQoHeads, numKvHeads, headDim, pageSize, dtypeCode(dtype), POLICY_CODE[policy], maxBatch].forEach((v, i) =>
      config.setInt32(4 * i, v, true),
    );
    config.setFloat32(28, smScale, true);
    const settings = encodeSettings(options.settings ?? {});
    const handle = outPointer("pkv_decode_engine_create_with", (out) =>
      native().pkv_decode_engine_create_with(runtime.handle, new Uint8Array(config.buffer), null, settings, out),
    );
    super(handle, (h) => native().pkv_decode_engine_destroy(h), "decode engine", runtime);
    this.numQoHeads = numQoHeads;
    this.numKvHeads = numKvHeads;
    this.headDim = headDim;
    this.pageSize = pageSize;
    this.dtype = dtype;
    this.policy = policy;
    this.maxBatch = maxBatch;
    this.#rows = new Int32Array(maxBatch);
    this.#lengths = new Int32Array(maxBatch);
  }

  /** The settings this engine runs with: every field, "auto" resolved to the math and loader chosen. */
  get settings(): Required<EngineSettings> {
    const bytes = new Uint8Array(SETTINGS_BYTES);
    check(native().pkv_decode_engine_settings(this.handle, bytes), "pkv_decode_engine_settings");
    return decodeSettings(bytes);
  }

  /** Whether the adaptive policy has a calibrated table (else the built-in rule decides everywhere). */
  get calibrated(): boolean {
    return this.#calibrated;
  }

  /** Loads a calibrated table into the adaptive policy; undefined clears it. */
  setPolicyTable(table: PolicyTable | undefined): void {
    const choices = table?.choices ?? new Int8Array(0);
    check(native().pkv_decode_set_policy_table(this.handle, choices, choices.length), "pkv_decode_set_policy_table");
    this.#calibrated = table !== undefined;
  }

  /** Builds the step's plan: uploads changed block-table entries and the workqueue. Never waits for the GPU. */
  plan<S>(cache: BatchSource<S>, sequences: readonly S[], options: { policy?: DecodePolicy } = {}): Plan {
    const batch = sequences.length;
    if (batch < 1 || batch > this.maxBatch)
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `batch of ${batch} sequences is not in 1..${this.maxBatch}`);
    const policy = options.policy === undefined ? -1 : POLICY_CODE[options.policy];
    if (policy === undefined)
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `policy "${options.policy}" is not "baseline", "persistent" or "adaptive"`);
    const rows = this.#rows.subarray(0, batch), lengths = this.#lengths.subarray(0, batch);
    cache.describeBatch(sequences, rows, lengths);
    const info = this.#info;
    check(native().pkv_decode_plan(this.handle, cache.poolHandle, batch, rows, lengths, policy, info), "pkv_decode_plan");
    const view = new DataView(info.buffer);
    const i32 = (offset: number) => view.getInt32(offset, true);
    const id = i32(16);
    this.#current = id;
    return new Plan(
      this,
      id,
      KERNEL_NAME[i32(20)]!,
      i32(24),
      i32(28),
      i32(32),
      i32(36),
      Number(view.getBigInt64(0, true)),
      Number(view.getBigInt64(8, true)),
    );
  }

  /**
   * Decode attention of one layer. q, out: [batch][numQoHeads][headDim] as Uint16Array bits (complete on
   * return) or device buffers (queued on the stream); lse (optional): float [batch][numQoHeads], natural log.
   */
  run(plan: Plan, layer: number, q: Io, out: Io, lse?: Float32Array | NativeBuffer, options: RunOptions = {}): void {
    if (plan.engine !== this) throw new InvalidArgumentError(Status.INVALID_ARGUMENT, "the plan belongs to another engine");
    if (plan.id !== this.#current)
      throw new StalePlanError(Status.STALE_PLAN, `plan ${plan.id} was replaced by plan ${this.#current}; plan the step again`);
    if (!Number.isInteger(layer)) throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `layer ${layer} is not an integer`);
    const elements = plan.batch * this.numQoHeads * this.headDim;
    if (q instanceof Uint16Array && out instanceof Uint16Array) {
      for (const [name, array] of [["q", q], ["out", out]] as const)
        if (array.length !== elements)
          throw new InvalidArgumentError(
            Status.INVALID_ARGUMENT,
            `${name} holds ${array.length} elements; [${plan.batch}][${this.numQoHeads}][${this.headDim}] needs ${elements}`,
          );
      if (lse !== undefined && !(lse instanceof Float32Array && lse.length === plan.batch * this.numQoHeads))
        throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `lse must be a Float32Array of ${plan.batch * this.numQoHeads}`);
      if (options.stream) throw new InvalidArgumentError(Status.INVALID_ARGUMENT, "a stream applies to device buffers only");
      check(native().pkv_decode_run(this.handle, plan.id, layer, q, out, (lse as Float32Array | undefined) ?? null), "pkv_decode_run");
      return;
    }
    if (q instanceof NativeBuffer && out instanceof NativeBuffer && (lse === undefined || lse instanceof NativeBuffer)) {
      const { stream, qOffset = 0, outOffset = 0, lseOffset = 0 } = options;
      check(
        native().pkv_decode_run_device(
          this.handle,
          plan.id,
          layer,
          q.handle,
          qOffset,
          out.handle,
          outOffset,
          lse?.handle ?? null,
          lseOffset,
          stream?.handle ?? null,
        ),
        "pkv_decode_run_device",
      );
      return;
    }
    throw new InvalidArgumentError(
      Status.INVALID_ARGUMENT,
      "q and out must both be Uint16Arrays (lse a Float32Array) or both device buffers (lse a buffer)",
    );
  }
}
