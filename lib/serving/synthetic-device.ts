// The synthetic model on the device: SyntheticModel's activations and tokens, bit for bit, computed by
// kernels (native pkv_synthetic_*) from its table, uploaded once. K and V go straight into the cache's
// pages; nothing is copied to or from the host.
import { type DeviceBuffer, NativeBuffer, streamHandle } from "../buffers";
import { check } from "../ffi/call";
import { native } from "../ffi/loader";
import { InvalidArgumentError, Status } from "../errors";
import { KVCache } from "../kvcache";
import { SYNTHETIC_TABLE_ENTRIES, SyntheticModel, type SyntheticShape } from "../scheduler/synthetic";
import { INT32_MAX, checkCount, show } from "../validate";
import type { DeviceModelShape, DeviceStep, DeviceStepModel } from "./device-model";

/** What the model needs of a runtime: device memory for its table. */
export interface DeviceAllocator {
  allocDevice(bytes: number): DeviceBuffer;
}

export class SyntheticDeviceModel implements DeviceStepModel {
  /** The host model it reproduces (tokens, K and V of the host path). */
  readonly host: SyntheticModel;
  readonly shape: DeviceModelShape;
  // Sampled tokens are below it; like SyntheticModel, the model sets no vocab limit on prompts.
  readonly #vocab: number;
  readonly #table: DeviceBuffer;

  constructor(runtime: DeviceAllocator, model: SyntheticModel | SyntheticShape) {
    this.host = model instanceof SyntheticModel ? model : new SyntheticModel(model);
    const { numLayers, numQoHeads, numKvHeads, headDim, vocab } = this.host.shape;
    checkCount("SyntheticDeviceModel", "vocab", vocab, 1, INT32_MAX);
    this.shape = { numLayers, numQoHeads, numKvHeads, headDim };
    this.#vocab = vocab;
    const table = this.host.table();
    if (table.length !== SYNTHETIC_TABLE_ENTRIES) throw new Error("the synthetic table changed size");
    this.#table = runtime.allocDevice(table.byteLength);
    this.#table.write(table);
  }

  forward(step: DeviceStep, layer: number, _previous: NativeBuffer | null, q: NativeBuffer): void {
    const { cache, batch, rows, stream } = this.#checkStep("forward", step);
    checkCount("forward", "layer", layer, 0, INT32_MAX);
    const status = native().pkv_synthetic_forward(
      cache.poolHandle,
      this.#table.handle,
      layer,
      this.shape.numQoHeads,
      batch,
      rows.handle,
      0,
      buffer("forward", "q", q).handle,
      0,
      stream,
    );
    check(status, "pkv_synthetic_forward");
  }

  prefill(step: DeviceStep): void {
    const { cache, batch, rows, stream } = this.#checkStep("prefill", step);
    check(
      native().pkv_synthetic_prefill(cache.poolHandle, this.#table.handle, batch, rows.handle, 0, stream),
      "pkv_synthetic_prefill",
    );
  }

  sample(step: DeviceStep, _out: NativeBuffer, tokens: NativeBuffer): void {
    const { batch, rows, stream } = checkStep("sample", step);
    const status = native().pkv_synthetic_sample(
      this.#vocab,
      batch,
      rows.handle,
      0,
      buffer("sample", "tokens", tokens).handle,
      0,
      stream,
    );
    check(status, "pkv_synthetic_sample");
  }

  /** The step's fields, checked; its cache must hold K/V of this model's shape and dtype. */
  #checkStep(method: string, step: DeviceStep) {
    const checked = checkStep(method, step);
    const c = checked.cache.config,
      m = this.host.shape;
    if (c.numLayers !== m.numLayers || c.numKvHeads !== m.numKvHeads || c.headDim !== m.headDim || c.dtype !== m.dtype)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `${method}: the cache (${c.numLayers} layers, ${c.numKvHeads} KV heads, head dim ${c.headDim}, ${c.dtype}) ` +
          `does not match the model (${m.numLayers}, ${m.numKvHeads}, ${m.headDim}, ${m.dtype})`,
      );
    return checked;
  }

  /** Frees the table on the device. */
  dispose(): void {
    this.#table.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}

function buffer(method: string, name: string, value: unknown): NativeBuffer {
  if (!(value instanceof NativeBuffer))
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `${method}: ${name} ${show(value)} is not a buffer`);
  return value;
}

function checkStep(method: string, step: DeviceStep) {
  if (typeof step !== "object" || step === null)
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `${method}: step ${show(step)} is not a DeviceStep`);
  if (!(step.cache instanceof KVCache))
    throw new InvalidArgumentError(
      Status.INVALID_ARGUMENT,
      `${method}: step.cache ${show(step.cache)} is not a KVCache`,
    );
  return {
    cache: step.cache,
    batch: checkCount(method, "step.batch", step.batch, 0, INT32_MAX),
    rows: buffer(method, "step.rows", step.rows),
    stream: streamHandle(method, step.stream),
  };
}
