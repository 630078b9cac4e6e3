// The three paths bench/serve.ts compares on the same load, and the statistics each one reports:
//   device     DeviceStepRunner over SyntheticDeviceModel: kernels write q and K/V, a step is one graph
//              replay (CUDA) and one awaited event;
//   host       HostStepRunner over SyntheticModel: host arrays, every layer a host round trip;
//   attention  the decode engine alone on the same batches: plan, the 32 layers' runs as one graph, sync.
import {
  type DecodeEngine,
  type DemoSizes,
  DeviceStepRunner,
  type DeviceRunnerStats,
  type Event,
  type Graph,
  HostStepRunner,
  type KVCache,
  type Runtime,
  type Sequence,
  type StepRunner,
  SyntheticDeviceModel,
  SyntheticModel,
  quantile,
} from "persistentkv";

export type PathName = "device" | "host" | "attention";
export const PATHS: readonly PathName[] = ["device", "host", "attention"];

export function parsePaths(text: string): PathName[] {
  const paths = text.split(",").map((p) => p.trim());
  for (const p of paths)
    if (!PATHS.includes(p as PathName)) throw new Error(`--path ${p} is not one of ${PATHS.join(", ")}`);
  return PATHS.filter((p) => paths.includes(p)); // device first: attention replays its batches
}

/** A path's step runner over a cache and engine. */
export interface PathRunner {
  runner: StepRunner<Sequence>;
  stats(): DeviceRunnerStats | undefined;
  dispose(): void;
}

export function makeRunner(
  path: "device" | "host",
  rt: Runtime,
  cache: KVCache,
  engine: DecodeEngine,
  sizes: DemoSizes,
): PathRunner {
  const { numLayers, numQoHeads, numKvHeads, headDim, dtype, pageSize, numPages, maxBatch } = sizes;
  const model = new SyntheticModel({ numLayers, numQoHeads, numKvHeads, headDim, dtype });
  if (path === "host") {
    const shape = { numLayers, numQoHeads, numKvHeads, headDim, pageSize, numPages, maxPagesPerSequence: numPages };
    const runner = new HostStepRunner({ cache, engine, model, shape, maxBatch });
    return { runner, stats: () => undefined, dispose: () => {} };
  }
  const device = new SyntheticDeviceModel(rt, model);
  const runner = new DeviceStepRunner({ runtime: rt, cache, engine, model: device, maxBatch });
  return {
    runner,
    stats: () => ({ ...runner.stats }),
    dispose: () => {
      runner.dispose();
      device.dispose();
    },
  };
}

/**
 * Attention alone: for a batch of sequences, the plan, then every layer's run on device buffers as one
 * graph (captured once per launch shape; the CPU backend has none and runs the layers), then a wait.
 * Returns the wall time of all of it and the GPU time between events around the layers.
 */
export class AttentionTimer {
  readonly #graphs = new Map<string, Graph>();
  readonly #q;
  readonly #out;
  readonly #start: Event;
  readonly #end: Event;

  constructor(
    readonly rt: Runtime,
    readonly engine: DecodeEngine,
    readonly cache: KVCache,
    readonly numLayers: number,
    maxBatch: number,
  ) {
    const bytes = maxBatch * engine.numQoHeads * engine.headDim * 2;
    this.#q = rt.allocDevice(bytes);
    this.#q.fill(0x3c); // 1.0-ish halves: finite scores
    this.#out = rt.allocDevice(bytes);
    this.#start = rt.createEvent();
    this.#end = rt.createEvent();
  }

  step(sequences: readonly Sequence[]): { wallUs: number; gpuUs: number; kernel: string } {
    const t0 = performance.now();
    const plan = this.engine.plan(this.cache, sequences);
    const layers = () => {
      for (let layer = 0; layer < this.numLayers; layer++) this.engine.run(plan, layer, this.#q, this.#out);
    };
    this.#start.record();
    if (this.rt.backend === "cuda") {
      const key = `${plan.batch}:${plan.kernel}:${plan.grid}`;
      let graph = this.#graphs.get(key);
      if (!graph) {
        graph = this.rt.capture(layers);
        this.#graphs.set(key, graph);
      }
      graph.launch();
    } else layers();
    this.#end.record();
    this.#end.synchronize();
    const wallUs = (performance.now() - t0) * 1000;
    return { wallUs, gpuUs: this.#end.elapsedSince(this.#start) * 1000, kernel: plan.kernel };
  }

  dispose(): void {
    for (const graph of this.#graphs.values()) graph.dispose();
    for (const x of [this.#q, this.#out, this.#start, this.#end]) x.dispose();
  }
}

/**
 * Keeps, in its own cache, a sequence per request at the lengths a recorded step had, so that the
 * attention path runs exactly the batches another path ran (K/V contents do not change its time).
 */
export class BatchReplayer {
  readonly #seqs = new Map<number, Sequence>();
  constructor(readonly cache: KVCache) {}

  /** The sequences of a step whose rows were requests `ids` at context lengths `lengths`. */
  batch(ids: readonly number[], lengths: readonly number[]): Sequence[] {
    const wanted = new Set(ids);
    for (const [id, seq] of this.#seqs)
      if (!wanted.has(id)) {
        this.cache.release(seq);
        this.#seqs.delete(id);
      }
    return ids.map((id, i) => {
      let seq = this.#seqs.get(id);
      if (seq && seq.length > lengths[i]!) {
        this.cache.release(seq); // recomputed after a preemption: start again
        seq = undefined;
      }
      if (!seq) {
        seq = this.cache.createSequence();
        this.#seqs.set(id, seq);
      }
      if (lengths[i]! > seq.length) this.cache.append(seq, lengths[i]! - seq.length);
      return seq;
    });
  }
}

/** A runner that records each decode's rows (request ids and context lengths) before running it. */
export function recording(
  runner: StepRunner<Sequence>,
  steps: { ids: number[]; lengths: number[] }[],
): StepRunner<Sequence> {
  return {
    ...(runner.maxBatch !== undefined ? { maxBatch: runner.maxBatch } : {}),
    ...(runner.vocab !== undefined ? { vocab: runner.vocab } : {}),
    ...(runner.maxContext !== undefined ? { maxContext: runner.maxContext } : {}),
    prefill: (request, seq, slots, from, to) => runner.prefill(request, seq, slots, from, to),
    decode: (batch, sequences, slots) => {
      steps.push({ ids: batch.map((r) => r.id), lengths: sequences.map((s) => s.length) });
      return runner.decode(batch, sequences, slots);
    },
  };
}

const round = (x: number, digits = 1) => Number(x.toFixed(digits));
const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

/** One path's entry in the results: throughput, step-time percentiles, and the batches it ran. */
export function pathEntry(
  path: PathName,
  o: { tokens: number; seconds: number; stepUs: number[]; batches: number[]; contexts: number[]; extra?: object },
) {
  const { stepUs, batches, contexts } = o;
  return {
    path,
    tokens_per_s: round(o.tokens / Math.max(1e-9, o.seconds)),
    step_us_p50: round(quantile(stepUs, 0.5)),
    step_us_p90: round(quantile(stepUs, 0.9)),
    step_us_p99: round(quantile(stepUs, 0.99)),
    step_us_mean: round(mean(stepUs)),
    steps: stepUs.length,
    tokens: o.tokens,
    seconds: round(o.seconds, 3),
    batch: { mean: round(mean(batches)), max: Math.max(0, ...batches) },
    context_per_row: { mean: round(mean(contexts)), max: Math.max(0, ...contexts) },
    ...o.extra,
  };
}
export type PathEntry = ReturnType<typeof pathEntry>;

/** A readable table of path entries. */
export function table(rows: (PathEntry & { cell?: string })[]): string {
  const head = ["cell", "path", "tokens/s", "step p50 us", "p90", "p99", "steps", "batch", "context/row"];
  const lines = rows.map((r) => [
    r.cell ?? "trace",
    r.path,
    String(r.tokens_per_s),
    String(r.step_us_p50),
    String(r.step_us_p90),
    String(r.step_us_p99),
    String(r.steps),
    String(r.batch.mean),
    String(r.context_per_row.mean),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  return [fmt(head), fmt(widths.map((w) => "-".repeat(w))), ...lines.map(fmt)].join("\n");
}
