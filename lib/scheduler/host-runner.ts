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
    const n = batch.length;
    const planStart = now();
    const plan = this.#engine.plan(this.#cache, sequences);
    const planMs = now() - planStart;
    const kernel = typeof plan.kernel === "number" ? (KERNELS[plan.kernel] ?? String(plan.kernel)) : plan.kernel;
    const { q, k, v, out } = this.#viewsFor(n);
    let previous: Uint16Array | null = null;
    for (let layer = 0; layer < this.#shape.numLayers; layer++) {
      const output = layer % 2 === 0 ? out[0] : out[1];
      this.#model.forward(batch, layer, previous, q, k, v);
      this.#cache.writeKV(layer, slots, k, v);
      this.#engine.run(plan, layer, q, output);
      previous = output;
    }
    return { tokens: this.#model.sample(batch, previous!), kernel, planMs };
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
