// bench/serve.ts --mode fixed: the same fixed batch (B rows, each at context C) stepped on every path, for
// the bar "device step within 1.15x of attention alone, and >= 3x the host path's tokens/s". Each cell
// prefills B distinct sequences once (on the device path's kernels), then every path runs its steps on
// forks of them (shared pages, so each path starts at exactly context C; each row appends its own tokens).
// A step's time is what a serving loop pays for it: the rows' appends, then the path's step, awaited.
import type { ActiveRequest, DemoSizes, Runtime, Sequence } from "persistentkv";
import { AttentionTimer, type PathEntry, type PathName, makeRunner, pathEntry } from "./serve-paths.ts";

export interface FixedOptions {
  batches: number[];
  contexts: number[];
  steps: number; // measured steps per path and cell
  warmup: number; // steps before them (graph captures happen here)
  policy: "adaptive" | "baseline" | "persistent";
  memoryFraction: number; // cells whose pool exceeds this share of device memory are skipped
}

export interface FixedCell {
  batch: number;
  context: number;
  paths: PathEntry[];
  device_over_attention_step: number | null;
  device_over_host_tokens: number | null;
  bar: { within_1_15x_of_attention: boolean | null; at_least_3x_host: boolean | null };
}

const ratio = (a: number | undefined, b: number | undefined) =>
  a === undefined || b === undefined || b === 0 ? null : Number((a / b).toFixed(3));

export async function runFixed(
  rt: Runtime,
  sizes: DemoSizes,
  paths: readonly PathName[],
  o: FixedOptions,
  log: (line: string) => void,
): Promise<{ cells: FixedCell[]; skipped: string[] }> {
  const { numLayers, numQoHeads, numKvHeads, headDim, pageSize: P, dtype } = sizes;
  const tokenBytes = numLayers * 2 * numKvHeads * headDim * 2;
  const cells: FixedCell[] = [];
  const skipped: string[] = [];
  for (const B of o.batches)
    for (const C of o.contexts) {
      const grow = Math.ceil((o.warmup + o.steps + 1) / P) + 1; // pages a fork adds (copy-on-write included)
      const perRow = Math.ceil(C / P) + 1;
      const numPages = B * (perRow + paths.length * grow) + 8;
      const bytes = numPages * P * tokenBytes;
      if (rt.backend === "cuda" && bytes > o.memoryFraction * rt.info.totalMemory) {
        skipped.push(`B${B} x ${C}: ${(bytes / 2 ** 30).toFixed(1)} GiB of KV pages`);
        continue;
      }
      const cacheSizes = { ...sizes, numPages, maxBatch: B };
      const cache = rt.createKVCache({
        numLayers,
        numPages,
        pageSize: P,
        numKvHeads,
        headDim,
        dtype,
        maxSequences: 2 * B + 2,
        maxPagesPerSequence: perRow + grow,
      });
      const engine = rt.createDecodeEngine({ cache, numQoHeads, maxBatch: B, policy: o.policy });
      const request = (i: number): ActiveRequest & { tokens: number[]; contextLength: number } => ({
        id: 1000 + i,
        tokens: new Array<number>(C + 1).fill(-1),
        promptLength: C + 1,
        generated: 0,
        contextLength: C,
      });
      // The base rows: C tokens of K/V each, written by the device model's prefill kernel.
      const base: Sequence[] = [];
      const filler = makeRunner("device", rt, cache, engine, cacheSizes);
      for (let i = 0; i < B; i++) {
        const seq = cache.createSequence();
        const slots = cache.append(seq, C);
        filler.runner.prefill(request(i), seq, slots, 0, C);
        base.push(seq);
      }
      filler.dispose();
      rt.synchronize();
      const entries: PathEntry[] = [];
      for (const path of paths) {
        const forks = base.map((seq) => cache.fork(seq));
        const requests = forks.map((_, i) => request(i));
        const runner = path === "attention" ? null : makeRunner(path, rt, cache, engine, cacheSizes);
        const timer = path === "attention" ? new AttentionTimer(rt, engine, cache, numLayers, B) : null;
        const stepUs: number[] = [];
        const slots = new Int32Array(B);
        for (let step = 0; step < o.warmup + o.steps; step++) {
          const t0 = performance.now();
          for (let i = 0; i < B; i++) slots[i] = cache.append(forks[i]!, 1)[0]!;
          if (runner) {
            const { tokens } = await runner.runner.decode(requests, forks, slots);
            requests.forEach((r, i) => {
              r.contextLength++;
              r.tokens.push(tokens[i]!);
            });
          } else timer!.step(forks);
          if (step >= o.warmup) stepUs.push((performance.now() - t0) * 1000);
        }
        const stats = runner?.stats();
        runner?.dispose();
        timer?.dispose();
        for (const seq of forks) cache.release(seq);
        const seconds = stepUs.reduce((a, b) => a + b, 0) / 1e6;
        entries.push(
          pathEntry(path, {
            tokens: B * o.steps,
            seconds,
            stepUs,
            batches: stepUs.map(() => B),
            contexts: [C + o.warmup + o.steps / 2],
            ...(stats ? { extra: { graphs: stats } } : {}),
          }),
        );
        log(
          `B${B} x ${C} ${path}: step p50 ${entries.at(-1)!.step_us_p50} us, ${entries.at(-1)!.tokens_per_s} tokens/s`,
        );
      }
      engine.dispose();
      cache.dispose();
      const by = (p: PathName) => entries.find((e) => e.path === p);
      const overAttention = ratio(by("device")?.step_us_p50, by("attention")?.step_us_p50);
      const overHost = ratio(by("device")?.tokens_per_s, by("host")?.tokens_per_s);
      cells.push({
        batch: B,
        context: C,
        paths: entries,
        device_over_attention_step: overAttention,
        device_over_host_tokens: overHost,
        bar: {
          within_1_15x_of_attention: overAttention === null ? null : overAttention <= 1.15,
          at_least_3x_host: overHost === null ? null : overHost >= 3,
        },
      });
    }
  return { cells, skipped };
}

/** The bar's table: one line per cell. */
export function barTable(cells: FixedCell[]): string {
  const lines = cells.map((c) => {
    const at = (p: PathName) => c.paths.find((e) => e.path === p);
    const show = (x: number | null | undefined) => (x === null || x === undefined ? "-" : String(x));
    const mark = (ok: boolean | null) => (ok === null ? "" : ok ? " ok" : " MISSED");
    return `| B${c.batch} | ${c.context} | ${show(at("device")?.step_us_p50)} | ${show(at("attention")?.step_us_p50)} | ${show(at("host")?.step_us_p50)} | ${show(c.device_over_attention_step)}${mark(c.bar.within_1_15x_of_attention)} | ${show(c.device_over_host_tokens)}${mark(c.bar.at_least_3x_host)} |`;
  });
  return [
    "| batch | context | device step p50 us | attention p50 us | host p50 us | device / attention (<= 1.15) | device / host tokens/s (>= 3) |",
    "| --- | --- | --- | --- | --- | --- | --- |",
    ...lines,
  ].join("\n");
}
