// A small continuous-batching driver for step runners, shared by the CPU and GPU tests of the device path:
// requests start (prefix-cache lookup, append, prefill) and leave on a fixed schedule, as the Scheduler
// does it, and every step's tokens plus every layer's K/V at the end are recorded, so that two runners
// (the host path and the device path) can be compared bit for bit.
import { expect } from "bun:test";
import {
  type ActiveRequest,
  type DecodeEngine,
  DeviceStepRunner,
  type DeviceRunnerStats,
  type KVCache,
  type KVCacheOptions,
  type RequestSpec,
  type Runtime,
  Scheduler,
  type SchedulerTotals,
  type Sequence,
  SyntheticDeviceModel,
  SyntheticModel,
  type SyntheticShape,
} from "../../lib/index.ts";
import type { DecodeResult, StepRunner } from "../../lib/scheduler/ports";

/** The host path: SyntheticModel, host arrays, engine.run per layer (the Scheduler's own loop). */
export class HostLoop implements StepRunner<Sequence> {
  constructor(
    readonly cache: KVCache,
    readonly engine: DecodeEngine,
    readonly model: SyntheticModel,
  ) {}

  prefill(request: ActiveRequest, _seq: Sequence, slots: Int32Array, from: number, to: number): void {
    const { numLayers, numKvHeads, headDim } = this.model.shape;
    const k = new Uint16Array((to - from) * numKvHeads * headDim);
    const v = new Uint16Array(k.length);
    for (let layer = 0; layer < numLayers; layer++) {
      this.model.prefill(request, layer, from, to, k, v);
      this.cache.writeKV(layer, slots, k, v);
    }
  }

  async decode(
    batch: readonly ActiveRequest[],
    sequences: readonly Sequence[],
    slots: Int32Array,
  ): Promise<DecodeResult> {
    const { numLayers, numQoHeads, numKvHeads, headDim } = this.model.shape;
    const n = batch.length;
    const plan = this.engine.plan(this.cache, sequences);
    const q = new Uint16Array(n * numQoHeads * headDim);
    const k = new Uint16Array(n * numKvHeads * headDim);
    const v = new Uint16Array(k.length);
    let out: Uint16Array = new Uint16Array(q.length);
    let previous: Uint16Array | null = null;
    for (let layer = 0; layer < numLayers; layer++) {
      this.model.forward(batch, layer, previous, q, k, v);
      this.cache.writeKV(layer, slots.subarray(0, n), k, v);
      this.engine.run(plan, layer, q, out);
      [previous, out] = [out, previous ?? new Uint16Array(q.length)];
    }
    return { tokens: this.model.sample(batch, previous!), kernel: plan.kernel, planMs: 0 };
  }
}

interface Live extends ActiveRequest {
  tokens: number[];
  generated: number;
  contextLength: number;
  known: boolean;
  seq: Sequence;
  slot: number;
}

export interface Arrival {
  step: number; // the step it joins before
  id: number;
  prompt: number[] | number; // token ids, or a length (ids unknown)
  maxTokens: number;
}

export interface DriveResult {
  tokens: number[][]; // per step, per row
  kv: Map<number, LayerKV>; // request id -> per layer, at its end
  kernels: string[];
}

/** Runs `arrivals` through `runner` over `cache` until every request has its tokens. */
export async function drive(cache: KVCache, runner: StepRunner<Sequence>, arrivals: Arrival[]): Promise<DriveResult> {
  const layers = cache.config.numLayers;
  const live: Live[] = [];
  const result: DriveResult = { tokens: [], kv: new Map(), kernels: [] };
  const pending = [...arrivals].sort((a, b) => a.step - b.step);
  for (let step = 0; pending.length > 0 || live.length > 0; step++) {
    while (pending.length > 0 && pending[0]!.step <= step) live.push(start(cache, runner, pending.shift()!));
    if (live.length === 0) continue;
    const slots = Int32Array.from(live, (r) => r.slot);
    const { tokens, kernel } = await runner.decode(
      live,
      live.map((r) => r.seq),
      slots,
    );
    result.tokens.push(Array.from(tokens));
    result.kernels.push(kernel);
    for (const [i, r] of [...live.entries()]) {
      r.contextLength++;
      r.tokens.push(tokens[i]!);
      r.generated++;
    }
    for (const r of [...live]) {
      if (r.generated === (arrivals.find((a) => a.id === r.id)?.maxTokens ?? 0)) {
        result.kv.set(
          r.id,
          Array.from({ length: layers }, (_, layer) => cache.readKV(layer, r.seq)),
        );
        cache.release(r.seq);
        live.splice(live.indexOf(r), 1);
        continue;
      }
      const token = r.tokens[r.contextLength]!;
      r.slot = cache.append(r.seq, r.known ? [token] : 1)[0]!;
    }
  }
  return result;
}

function start(cache: KVCache, runner: StepRunner<Sequence>, a: Arrival): Live {
  const known = typeof a.prompt !== "number";
  const tokens = known ? [...(a.prompt as number[])] : new Array<number>(a.prompt as number).fill(-1);
  const length = tokens.length;
  const seq = known ? cache.createSequence({ tokens: tokens.slice(0, length - 1) }) : cache.createSequence();
  const hit = seq.length;
  const slots = cache.append(seq, known ? tokens.slice(hit, length) : length - hit);
  const r: Live = {
    id: a.id,
    tokens,
    promptLength: length,
    generated: 0,
    contextLength: hit,
    known,
    seq,
    slot: slots[slots.length - 1]!,
  };
  runner.prefill(r, seq, slots.subarray(0, slots.length - 1), hit, length - 1);
  r.contextLength = length - 1;
  return r;
}

/** A schedule with shared prompt prefixes, prompts known only by length, and requests joining and leaving. */
export function mixedArrivals(pageSize: number): Arrival[] {
  const system = Array.from({ length: 3 * pageSize }, (_, i) => 1000 + i);
  return [
    { step: 0, id: 1, prompt: [...system, 7, 8, 9], maxTokens: 6 },
    { step: 0, id: 2, prompt: 2 * pageSize + 1, maxTokens: 9 },
    { step: 0, id: 3, prompt: [5], maxTokens: 4 },
    { step: 2, id: 4, prompt: [...system, 11], maxTokens: 7 }, // shares the system prompt's pages
    { step: 3, id: 5, prompt: 3, maxTokens: 3 },
    { step: 7, id: 6, prompt: [...system, 7, 8, 9, 10, 12], maxTokens: 5 },
  ];
}

/** Two runs agree bit for bit: every step's tokens and every request's K and V in every layer. */
export function expectSameRuns(device: DriveResult, host: DriveResult): void {
  expect(device.tokens).toEqual(host.tokens);
  expectSameKV(device.kv, host.kv);
}

type LayerKV = { k: Uint16Array; v: Uint16Array }[];

export interface ScheduledRun {
  results: { id: number; tokens: number[]; reason: string }[];
  kv: Map<number, LayerKV>; // request id -> every layer's K/V when it retired
  totals: SchedulerTotals;
  stats?: DeviceRunnerStats; // the device path's
}

/**
 * Serves `specs` with a Scheduler on the host path (SyntheticModel, engine over host arrays) or the device
 * path (DeviceStepRunner over SyntheticDeviceModel), recording each request's tokens and its K/V at retirement.
 */
export async function runScheduled(
  rt: Runtime,
  device: boolean,
  shape: SyntheticShape,
  cacheOptions: Omit<KVCacheOptions, "numLayers" | "numKvHeads" | "headDim" | "dtype">,
  maxBatch: number,
  specs: RequestSpec[],
): Promise<ScheduledRun> {
  const cache = rt.createKVCache({ ...shape, ...cacheOptions });
  const engine = rt.createDecodeEngine({ cache, numQoHeads: shape.numQoHeads, maxBatch });
  const host = new SyntheticModel(shape);
  const model = device ? new SyntheticDeviceModel(rt, host) : null;
  const runner = model ? new DeviceStepRunner({ runtime: rt, cache, engine, model }) : null;
  const scheduler = runner ? new Scheduler({ cache, runner }) : new Scheduler({ cache, engine, model: host });
  const kv = new Map<number, LayerKV>();
  scheduler.onRetire((request, seq) =>
    kv.set(
      request.id,
      Array.from({ length: shape.numLayers }, (_, layer) => cache.readKV(layer, seq)),
    ),
  );
  try {
    const handles = specs.map((spec) => scheduler.submit(spec));
    await scheduler.run({ untilIdle: true });
    const results = await Promise.all(handles.map((h) => h.done));
    return {
      results: results.map((r) => ({ id: r.id, tokens: r.tokens, reason: r.finishReason })),
      kv,
      totals: scheduler.totals,
      ...(runner ? { stats: { ...runner.stats } } : {}),
    };
  } finally {
    await scheduler.close();
    runner?.dispose();
    model?.dispose();
    engine.dispose();
    cache.dispose();
  }
}

/** Two scheduled runs agree bit for bit: every request's tokens and finish reason, and its K/V in every layer. */
export function expectSameScheduled(got: ScheduledRun, want: ScheduledRun): void {
  expect(got.results).toEqual(want.results);
  expectSameKV(got.kv, want.kv);
}

function expectSameKV(got: Map<number, LayerKV>, want: Map<number, LayerKV>): void {
  expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
  for (const [id, layers] of want)
    layers.forEach((w, layer) => {
      const g = got.get(id)![layer]!;
      const same = { k: sameBits(g.k, w.k), v: sameBits(g.v, w.v) };
      expect({ id, layer, same }).toEqual({ id, layer, same: { k: true, v: true } });
    });
}

export function sameBits(a: Uint16Array, b: Uint16Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}
