// The host path of a step: a StepModel fills host arrays, the cache stores K/V from them and the engine
// runs attention on them, layer by layer. It suits the CPU backend and simple models; every layer is a
// host round trip on a GPU, which is what the device path removes.
//
// The arrays are allocated once for the largest batch and reused: a step views the first `n` rows of
// each (views are cached per batch size), so a step allocates nothing in proportion to its size.
import { OutOfRangeError, Status } from "../errors";
import type { ActiveRequest } from "./request";
import type { DecodeResult, ModelShape, SchedulerEngine, SchedulerPlan, StepModel, StepRunner } from "./ports";

const KERNELS = ["baseline", "persistent"];
const now = () => performance.now();

/** What the host path writes K and V through (KVCache has it). */
export interface HostRunnerCache {
  writeKV(layer: number, slots: Int32Array, k: Uint16Array, v: Uint16Array): void;
}

export interface HostStepRunnerOptions<C, Seq, P extends SchedulerPlan> {
  cache: C & HostRunnerCache;
  engine: SchedulerEngine<C, Seq, P>;
  model: StepModel;
  shape: Required<ModelShape>;
  /** Rows the reused arrays hold. */
  maxBatch: number;
}

/** The views of one batch size into the reused arrays. */
interface Views {
  q: Uint16Array;
  k: Uint16Array;
  v: Uint16Array;
  /** Attention outputs, alternating by layer: one layer's output is the next layer's input. */
  out: [Uint16Array, Uint16Array];
}

export class HostStepRunner<C, Seq, P extends SchedulerPlan = SchedulerPlan> implements StepRunner<Seq> {
  readonly maxBatch: number;
  readonly maxContext?: number;
  readonly vocab?: number;
  readonly #cache: C & HostRunnerCache;
  readonly #engine: SchedulerEngine<C, Seq, P>;
  readonly #model: StepModel;
  readonly #shape: Required<ModelShape>;
  readonly #q: Uint16Array;
  readonly #k: Uint16Array;
  readonly #v: Uint16Array;
  readonly #out: [Uint16Array, Uint16Array];
  readonly #views = new Map<number, Views>();
  // Prefill K/V: grown to the longest prompt seen, then reused.
  #prefillK = new Uint16Array(0);
  #prefillV = new Uint16Array(0);

  constructor(options: HostStepRunnerOptions<C, Seq, P>) {
    const { cache, engine, model, shape, maxBatch } = options;
    this.#cache = cache;
    this.#engine = engine;
    this.#model = model;
    this.#shape = shape;
    this.maxBatch = maxBatch;
    this.maxContext = model.maxContext;
    this.vocab = model.vocab;
    const qRow = shape.numQoHeads * shape.headDim;
    const kvRow = shape.numKvHeads * shape.headDim;
    this.#q = new Uint16Array(maxBatch * qRow);
    this.#k = new Uint16Array(maxBatch * kvRow);
    this.#v = new Uint16Array(maxBatch * kvRow);
    this.#out = [new Uint16Array(maxBatch * qRow), new Uint16Array(maxBatch * qRow)];
  }

  prefill(request: ActiveRequest, _seq: Seq, slots: Int32Array, from: number, to: number): void {
    if (to <= from) return;
    const { numLayers, numKvHeads, headDim } = this.#shape;
    const size = (to - from) * numKvHeads * headDim;
    if (this.#prefillK.length < size) {
      this.#prefillK = new Uint16Array(size);
      this.#prefillV = new Uint16Array(size);
    }
    const k = this.#prefillK.subarray(0, size);
    const v = this.#prefillV.subarray(0, size);
    for (let layer = 0; layer < numLayers; layer++) {
      this.#model.prefill(request, layer, from, to, k, v);
      this.#cache.writeKV(layer, slots, k, v);
    }
  }

  /** Runs the whole step before returning: on the host there is nothing to overlap it with. */
  async decode(batch: readonly ActiveRequest[], sequences: readonly Seq[], slots: Int32Array): Promise<DecodeResult> {
    const { plan, kernel, planMs } = this.#plan(sequences);
    const last = this.#layers(plan, batch, slots, this.#viewsFor(batch.length));
    return { tokens: this.#model.sample(batch, last), kernel, planMs };
  }

  #plan(sequences: readonly Seq[], qLens?: Int32Array): { plan: P; kernel: string; planMs: number } {
    const planStart = now();
    const plan = qLens
      ? this.#engine.plan(this.#cache, sequences, { qLens })
      : this.#engine.plan(this.#cache, sequences);
    const planMs = now() - planStart;
    const kernel = typeof plan.kernel === "number" ? (KERNELS[plan.kernel] ?? String(plan.kernel)) : plan.kernel;
    return { plan, kernel, planMs };
  }

  /** Every layer: the model's q, k, v of `rows`, K/V into `slots`, attention; the last layer's output. */
  #layers(plan: P, rows: readonly ActiveRequest[], slots: Int32Array, { q, k, v, out }: Views): Uint16Array {
    let previous: Uint16Array | null = null;
    for (let layer = 0; layer < this.#shape.numLayers; layer++) {
      const output = layer % 2 === 0 ? out[0] : out[1];
      this.#model.forward(rows, layer, previous, q, k, v);
      this.#cache.writeKV(layer, slots, k, v);
      this.#engine.run(plan, layer, q, output);
      previous = output;
    }
    return previous!;
  }

  /**
   * A chunked step: every query token of every row is a row of the model's forward (a view of its
   * request at that position), so one forward per layer fills q, k and v of all of them; the engine
   * attends over each row's context causally (a plan with qLens); each row samples from its last token.
   */
  async decodeChunks(
    batch: readonly ActiveRequest[],
    sequences: readonly Seq[],
    queryLengths: Int32Array,
    slots: Int32Array,
    options: { everyToken?: boolean; drafts?: readonly (readonly number[] | undefined)[] } = {},
  ): Promise<DecodeResult> {
    const { plan, kernel, planMs } = this.#plan(sequences, queryLengths);
    const tokens: ActiveRequest[] = [];
    const last: ActiveRequest[] = [];
    batch.forEach((request, i) => {
      const drafts = options.drafts?.[i];
      const known = drafts?.length ? { ...request, tokens: [...request.tokens, ...drafts] } : request;
      for (let j = 0; j < queryLengths[i]!; j++) tokens.push(at(known, request.contextLength + j));
      last.push(tokens.at(-1)!);
    });
    const previous = this.#layers(plan, tokens, slots, this.#chunkViews(tokens.length));
    if (options.everyToken) return { tokens: this.#model.sample(tokens, previous), kernel, planMs };
    // Each row's last query token's output, [batch][Hq][d], for sample.
    const qRow = this.#shape.numQoHeads * this.#shape.headDim;
    const lastOut = new Uint16Array(batch.length * qRow);
    for (let i = 0, row = 0; i < batch.length; row += queryLengths[i]!, i++)
      lastOut.set(previous.subarray((row + queryLengths[i]! - 1) * qRow, (row + queryLengths[i]!) * qRow), i * qRow);
    return { tokens: this.#model.sample(last, lastOut), kernel, planMs };
  }

  // Chunked steps' arrays, grown to the most query tokens a step has had.
  #chunk: Views | null = null;
  #chunkViews(n: number): Views {
    const qRow = this.#shape.numQoHeads * this.#shape.headDim,
      kvRow = this.#shape.numKvHeads * this.#shape.headDim;
    if (!this.#chunk || this.#chunk.q.length < n * qRow)
      this.#chunk = {
        q: new Uint16Array(n * qRow),
        k: new Uint16Array(n * kvRow),
        v: new Uint16Array(n * kvRow),
        out: [new Uint16Array(n * qRow), new Uint16Array(n * qRow)],
      };
    const c = this.#chunk;
    return {
      q: c.q.subarray(0, n * qRow),
      k: c.k.subarray(0, n * kvRow),
      v: c.v.subarray(0, n * kvRow),
      out: [c.out[0].subarray(0, n * qRow), c.out[1].subarray(0, n * qRow)],
    };
  }

  #viewsFor(n: number): Views {
    let views = this.#views.get(n);
    if (!views) {
      if (n > this.maxBatch)
        throw new OutOfRangeError(
          Status.OUT_OF_RANGE,
          `a batch of ${n} rows is more than the ${this.maxBatch} allocated`,
        );
      const qn = n * this.#shape.numQoHeads * this.#shape.headDim;
      const kvn = n * this.#shape.numKvHeads * this.#shape.headDim;
      views = {
        q: this.#q.subarray(0, qn),
        k: this.#k.subarray(0, kvn),
        v: this.#v.subarray(0, kvn),
        out: [this.#out[0].subarray(0, qn), this.#out[1].subarray(0, qn)],
      };
      this.#views.set(n, views);
    }
    return views;
  }
}

/** A request as the model sees it at query position `position` (its context holds the tokens before it). */
function at(request: ActiveRequest, position: number): ActiveRequest {
  const { id, tokens, promptLength, generated } = request;
  return { id, tokens, promptLength, generated, contextLength: position };
}
