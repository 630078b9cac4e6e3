// The device-resident decode step: a StepRunner over a KVCache, a DecodeEngine and a DeviceStepModel.
// Buffers are allocated once for the largest batch and reused; a step queues, on the runtime's stream,
// the copy of its rows (pinned -> device), every layer's forward (q, and K/V into the cache) and attention,
// the sample and the copy of the tokens to pinned memory, then awaits one event: the step's only host
// synchronisation, polled so that the event loop keeps running. On CUDA the queued step (everything after
// the plan) is captured as a graph per (batch, kernel, grid), the launch shape the plan decides, and
// replayed for later steps of that shape: their plans upload into the same device image and their rows
// into the same buffer, so the replay runs the new step. The plan itself is built and uploaded just before
// (the engine refuses to plan inside a capture: its staging images alternate). On the CPU backend every call
// completes at once and the step simply runs.
import type { DeviceBuffer, PinnedBuffer } from "../buffers";
import type { DecodeEngine, DecodePolicy, Plan } from "../engine";
import { BadStateError, InvalidArgumentError, Status } from "../errors";
import type { Graph } from "../graphs";
import type { KVCache, Sequence } from "../kvcache";
import type { ActiveRequest } from "../scheduler/request";
import type { DecodeResult, StepRunner } from "../scheduler/ports";
import type { Event } from "../streams";
import { INT32_MAX, checkCount, checkOptions, show } from "../validate";
import { type DeviceStep, type DeviceStepModel, STEP_ROW_BYTES, STEP_ROW_INTS, writeStepRow } from "./device-model";

/** What the runner needs of a runtime (Runtime has it all). */
export interface RunnerRuntime {
  readonly backend: "cuda" | "cpu";
  allocDevice(bytes: number): DeviceBuffer;
  allocPinned(bytes: number): PinnedBuffer;
  createEvent(): Event;
  capture(body: () => void): Graph;
}

export interface DeviceStepRunnerOptions {
  runtime: RunnerRuntime;
  cache: KVCache;
  engine: DecodeEngine;
  model: DeviceStepModel;
  /** Most rows of a step (default: the engine's maxBatch). */
  maxBatch?: number;
  /** Capture and replay steps as CUDA graphs (default: on CUDA; the CPU backend has none). */
  graphs?: boolean;
  /** Graphs kept, least recently used dropped first (default 32). */
  maxGraphs?: number;
  /** Capture a launch shape once it has been seen this many times (default 2): one-off shapes run directly.
   * The first step of a runner always runs directly. */
  captureAfter?: number;
  /** Policy of every step's plan (default: the engine's). */
  policy?: DecodePolicy;
}

/** How the steps ran: directly, captured (and then launched), or replayed from a graph. */
export interface DeviceRunnerStats {
  steps: number;
  direct: number;
  captures: number;
  replays: number;
  graphs: number;
  /** Why graphs were given up (a capture failed), if they were. */
  captureError?: string;
}

const now = () => performance.now();

export class DeviceStepRunner implements StepRunner<Sequence> {
  readonly cache: KVCache;
  readonly engine: DecodeEngine;
  readonly model: DeviceStepModel;
  readonly maxBatch: number;
  readonly graphsEnabled: boolean;
  readonly vocab?: number;
  readonly maxContext?: number;
  readonly #runtime: RunnerRuntime;
  readonly #policy: DecodePolicy | undefined;
  readonly #maxGraphs: number;
  readonly #captureAfter: number;
  // Device buffers of the step (rows, q, two attention outputs, tokens) and their pinned ends.
  readonly #rowsPinned: PinnedBuffer;
  readonly #rowsHost: Int32Array;
  readonly #rows: DeviceBuffer;
  readonly #q: DeviceBuffer;
  readonly #out: [DeviceBuffer, DeviceBuffer];
  readonly #tokens: DeviceBuffer;
  readonly #tokensPinned: PinnedBuffer;
  readonly #tokensHost: Int32Array;
  readonly #stepDone: Event;
  // Prefill rows: their own buffer, so that no captured step's rows are touched; grown on demand.
  #prefillRows: DeviceBuffer | null = null;
  #prefillHost = new Int32Array(0);
  readonly #graphs = new Map<string, Graph>();
  readonly #seen = new Map<string, number>();
  #busy = false;
  #disposed = false;
  #captureFailed = false;
  readonly stats: DeviceRunnerStats = { steps: 0, direct: 0, captures: 0, replays: 0, graphs: 0 };

  constructor(options: DeviceStepRunnerOptions) {
    const method = "DeviceStepRunner";
    const o = checkOptions(method, options);
    const { runtime, cache, engine, model } = o;
    for (const [name, value] of [
      ["runtime", runtime],
      ["cache", cache],
      ["engine", engine],
      ["model", model],
    ] as const)
      if (typeof value !== "object" || value === null)
        throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `${method}: ${name} ${show(value)} is not an object`);
    const shape = model.shape;
    if (
      shape.numQoHeads !== engine.numQoHeads ||
      shape.headDim !== engine.headDim ||
      shape.numKvHeads !== engine.numKvHeads
    )
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `${method}: the model's heads (${shape.numQoHeads} q, ${shape.numKvHeads} KV, dim ${shape.headDim}) differ from the engine's (${engine.numQoHeads}, ${engine.numKvHeads}, ${engine.headDim})`,
      );
    if (shape.numLayers !== cache.config.numLayers)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `${method}: the model has ${shape.numLayers} layers, the cache ${cache.config.numLayers}`,
      );
    this.maxBatch = checkCount(method, "maxBatch", o.maxBatch ?? engine.maxBatch, 1, engine.maxBatch);
    const wantGraphs = o.graphs ?? runtime.backend === "cuda";
    if (typeof wantGraphs !== "boolean")
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `${method}: graphs ${show(wantGraphs)} is not a boolean`);
    this.graphsEnabled = wantGraphs && runtime.backend === "cuda";
    this.#maxGraphs = checkCount(method, "maxGraphs", o.maxGraphs ?? 32, 1, INT32_MAX);
    this.#captureAfter = checkCount(method, "captureAfter", o.captureAfter ?? 2, 1, INT32_MAX);
    this.#policy = o.policy;
    this.#runtime = runtime;
    this.cache = cache;
    this.engine = engine;
    this.model = model;
    if (model.vocab !== undefined) this.vocab = model.vocab;
    if (model.maxContext !== undefined) this.maxContext = model.maxContext;

    const B = this.maxBatch;
    const ioBytes = B * shape.numQoHeads * shape.headDim * 2;
    const made: { dispose(): void }[] = [];
    const keep = <T extends { dispose(): void }>(x: T): T => {
      made.push(x);
      return x;
    };
    try {
      this.#rowsPinned = keep(runtime.allocPinned(B * STEP_ROW_BYTES));
      this.#rows = keep(runtime.allocDevice(B * STEP_ROW_BYTES));
      this.#q = keep(runtime.allocDevice(ioBytes));
      this.#out = [keep(runtime.allocDevice(ioBytes)), keep(runtime.allocDevice(ioBytes))];
      this.#tokens = keep(runtime.allocDevice(B * 4));
      this.#tokensPinned = keep(runtime.allocPinned(B * 4));
      this.#stepDone = keep(runtime.createEvent());
    } catch (error) {
      for (const x of made) x.dispose();
      throw error;
    }
    this.#rowsHost = this.#rowsPinned.view(Int32Array);
    this.#tokensHost = this.#tokensPinned.view(Int32Array);
  }

  /** Writes the K and V of context positions [from, to) of `request` (every layer) into `slots`. */
  prefill(request: ActiveRequest, _seq: Sequence, slots: Int32Array, from: number, to: number): void {
    this.#checkLive("prefill");
    if (!(slots instanceof Int32Array) || !Number.isInteger(from) || !Number.isInteger(to) || from < 0 || to < from)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `prefill: positions [${from}, ${to}) with slots ${show(slots)}`,
      );
    const n = to - from;
    if (slots.length !== n)
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `prefill: ${slots.length} slots for ${n} positions`);
    if (n === 0) return;
    const rows = this.#prefillBuffers(n);
    for (let i = 0; i < n; i++) writeStepRow(rows, i, request.id, from + i, request.tokens[from + i] ?? -1, slots[i]!);
    // Complete on return, so the host rows may be rewritten by the next prefill; the kernel is only queued.
    this.#prefillRows!.write(rows.subarray(0, n * STEP_ROW_INTS));
    this.model.prefill({ batch: n, rows: this.#prefillRows!, cache: this.cache });
  }

  /**
   * One decode step: row i's new token (at position batch[i].contextLength) goes to slots[i] in every
   * layer; resolves to one sampled token per row, once the GPU is done (the event loop runs meanwhile).
   */
  async decode(
    batch: readonly ActiveRequest[],
    sequences: readonly Sequence[],
    slots: Int32Array,
  ): Promise<DecodeResult> {
    this.#checkLive("decode");
    const n = batch.length;
    if (n < 1 || n > this.maxBatch)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `decode: batch of ${n} rows is not in 1..${this.maxBatch}`,
      );
    if (sequences.length !== n || !(slots instanceof Int32Array) || slots.length < n)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `decode: ${n} rows need ${n} sequences and ${n} slots (got ${sequences.length} and ${show(slots)})`,
      );
    if (this.#busy) throw new BadStateError(Status.BAD_STATE, "decode: the previous step is still running");
    this.#busy = true;
    try {
      for (let i = 0; i < n; i++) {
        const request = batch[i]!;
        const position = request.contextLength;
        writeStepRow(this.#rowsHost, i, request.id, position, request.tokens[position] ?? -1, slots[i]!);
      }
      const planStart = now();
      const plan = this.engine.plan(this.cache, sequences, this.#policy ? { policy: this.#policy } : undefined);
      const planMs = now() - planStart;
      this.#launch(plan, n);
      this.#stepDone.record();
      await this.#stepDone.done();
      this.stats.steps++;
      return { tokens: this.#tokensHost.slice(0, n), kernel: plan.kernel, planMs };
    } finally {
      this.#busy = false;
    }
  }

  /** Frees the buffers and graphs. Further calls throw BadStateError. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const graph of this.#graphs.values()) graph.dispose();
    this.#graphs.clear();
    for (const x of [
      this.#rowsPinned,
      this.#rows,
      this.#q,
      ...this.#out,
      this.#tokens,
      this.#tokensPinned,
      this.#stepDone,
    ])
      x.dispose();
    this.#prefillRows?.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }

  /** Queues the step after its plan: replayed from a graph of its launch shape, captured, or run directly. */
  #launch(plan: Plan, n: number): void {
    if (!this.graphsEnabled || this.#captureFailed) {
      this.#enqueue(plan, n);
      this.stats.direct++;
      return;
    }
    // A graph captured without the shared-prefix launches cannot replay a step that needs them; one
    // captured with the other loader would compute the same, at the other loader's speed.
    const key = `${n}:${plan.kernel}:${plan.grid}:${plan.sharedTasks > 0 ? "shared" : "unshared"}:${plan.loader}`;
    let graph = this.#graphs.get(key);
    if (graph) {
      this.#graphs.delete(key); // re-inserted last: the Map's order is the recency order
      this.#graphs.set(key, graph);
      graph.launch();
      this.stats.replays++;
      return;
    }
    if (this.#seen.size >= 4096) this.#seen.clear(); // one-off shapes of a long run: forget them
    const seen = (this.#seen.get(key) ?? 0) + 1;
    this.#seen.set(key, seen);
    // The runner's first step runs directly: it loads the model's kernels (CUDA loads them lazily, at first
    // launch), which must not happen inside a capture.
    if (seen < this.#captureAfter || this.stats.steps === 0) {
      this.#enqueue(plan, n);
      this.stats.direct++;
      return;
    }
    try {
      graph = this.#runtime.capture(() => this.#enqueue(plan, n));
    } catch (error) {
      // A capture the GPU refuses leaves the stream as it was: the step and every later one run directly,
      // and stats say why.
      this.#captureFailed = true;
      this.stats.captureError = (error as Error).message;
      this.#enqueue(plan, n);
      this.stats.direct++;
      return;
    }
    this.#seen.delete(key);
    if (this.#graphs.size >= this.#maxGraphs) {
      const [oldest, dropped] = this.#graphs.entries().next().value as [string, Graph];
      this.#graphs.delete(oldest);
      dropped.dispose();
    }
    this.#graphs.set(key, graph);
    this.stats.captures++;
    this.stats.graphs = this.#graphs.size;
    graph.launch();
  }

  /** The step's queued work: rows up, every layer (forward, attention), sample, tokens down. */
  #enqueue(plan: Plan, n: number): void {
    this.#rows.copyFrom(this.#rowsPinned, { bytes: n * STEP_ROW_BYTES });
    const step: DeviceStep = { batch: n, rows: this.#rows, cache: this.cache };
    let previous: DeviceBuffer | null = null;
    for (let layer = 0; layer < this.model.shape.numLayers; layer++) {
      const out = this.#out[layer & 1]!;
      this.model.forward(step, layer, previous, this.#q);
      this.engine.run(plan, layer, this.#q, out);
      previous = out;
    }
    this.model.sample(step, previous!, this.#tokens);
    this.#tokensPinned.copyFrom(this.#tokens, { bytes: n * 4 });
  }

  #prefillBuffers(n: number): Int32Array {
    if (this.#prefillHost.length < n * STEP_ROW_INTS) {
      const capacity = Math.max(n, 2 * (this.#prefillHost.length / STEP_ROW_INTS), 256);
      const buffer = this.#runtime.allocDevice(capacity * STEP_ROW_BYTES);
      this.#prefillRows?.dispose();
      this.#prefillRows = buffer;
      this.#prefillHost = new Int32Array(capacity * STEP_ROW_INTS);
    }
    return this.#prefillHost;
  }

  #checkLive(method: string): void {
    if (this.#disposed) throw new BadStateError(Status.BAD_STATE, `${method}: the runner was disposed`);
  }
}
