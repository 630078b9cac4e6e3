// Serving benchmark on the synthetic model, on up to three paths in one run (--path, default all):
//   device     DeviceStepRunner: kernels write q and K/V on the GPU, each step one graph replay and one
//              awaited event (no host copies);
//   host       HostStepRunner: host arrays, every layer a host round trip (the Scheduler's default path);
//   attention  the decode engine alone on the device path's batches: plan + the layers as one graph + sync.
// Two modes:
//   --mode trace (default): requests arrive (Poisson, or from a trace file) with prompt and output lengths
//     drawn from distributions, and a Scheduler serves them in wall-clock time on each path in turn (the
//     same arrivals); reports tokens/s, step-time percentiles, batch and context stats per path, request
//     latency, KV utilisation and waste, preemptions, swaps and prefix hits, as JSON, a table and an SVG plot.
//   --mode fixed: B rows at context C (B8-B128 x 4K-32K on a GPU, cells that fit in memory) stepped on every
//     path, for the bar "device step within 1.15x of attention alone, and >= 3x the host path's tokens/s".
//
//   bun bench/serve.ts                                     # small defaults: seconds on the CPU backend
//   bun bench/serve.ts --backend cuda --requests 512 --rate 32
//   bun bench/serve.ts --backend cuda --mode fixed         # the bar's cells
//   bun bench/serve.ts --trace trace.jsonl                 # lines of {"arrival": s, "prompt": n, "output": n}
//   bun bench/serve.ts --help
//
// Flags (defaults depend on the backend; see `defaults` below):
//   --backend auto|cpu|cuda   --path device,host,attention   --mode trace|fixed
//   trace: --requests N   --rate R (requests/s, Poisson; 0: all at once)
//     --prompt DIST  --output DIST   where DIST is uniform:a:b, lognormal:median:sigma or fixed:n
//     --shared-prefix N  --shared-fraction F   a system prompt of N tokens starts a fraction F of prompts
//     --trace FILE   arrivals from a file instead (JSON array or JSON lines), prompts still get ids
//     --pages N  --swap-pages N  --max-batch N
//   fixed: --batches 8,16,...  --contexts 4096,...  --steps N  --warmup N  --memory-fraction F
//   both: --layers N  --policy adaptive|baseline|persistent  --seed N
//     --out FILE.json (default bench/results/serve[-fixed]-<date>-<device>.json, with a .md table beside it)
//     --svg FILE.svg (trace mode)
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import { commit } from "./meta.ts";
import { type FixedCell, barTable, runFixed } from "./serve-fixed.ts";
import {
  AttentionTimer,
  BatchReplayer,
  type PathEntry,
  makeRunner,
  parsePaths,
  pathEntry,
  recording,
  table,
} from "./serve-paths.ts";
import { Scheduler, type StepReport, openRuntime, quantile, sizesFor } from "persistentkv";

const { values: flags } = parseArgs({
  options: {
    backend: { type: "string", default: "auto" },
    path: { type: "string", default: "device,host,attention" },
    mode: { type: "string", default: "trace" },
    batches: { type: "string" },
    contexts: { type: "string" },
    steps: { type: "string" },
    warmup: { type: "string" },
    "memory-fraction": { type: "string", default: "0.8" },
    requests: { type: "string" },
    rate: { type: "string" }, // requests per second; 0 = all at once
    prompt: { type: "string" }, // uniform:a:b | lognormal:median:sigma | fixed:n
    output: { type: "string" },
    "shared-prefix": { type: "string" }, // tokens of a system prompt shared by some requests
    "shared-fraction": { type: "string", default: "0.5" },
    trace: { type: "string" },
    pages: { type: "string" },
    "swap-pages": { type: "string" },
    layers: { type: "string" },
    "max-batch": { type: "string" },
    policy: { type: "string", default: "adaptive" },
    seed: { type: "string", default: "1" },
    out: { type: "string" },
    svg: { type: "string" },
    help: { type: "boolean", default: false },
  },
});
if (flags.help) {
  console.log(readFileSync(import.meta.path, "utf8").split("\nimport")[0]);
  process.exit(0);
}

using rt = openRuntime({ backend: flags.backend as "auto" | "cpu" | "cuda" });
const gpu = rt.backend === "cuda";
// Defaults: a pool small enough that the load forces preemption (swap, then recompute) on either backend.
const defaults = gpu
  ? {
      requests: 256,
      rate: 16,
      prompt: "lognormal:1024:0.8",
      output: "uniform:64:512",
      shared: 512,
      pages: 4096,
      swap: 1024,
    }
  : { requests: 64, rate: 200, prompt: "uniform:16:192", output: "uniform:8:48", shared: 32, pages: 96, swap: 8 };
const num = (value: string | undefined, fallback: number) => (value === undefined ? fallback : Number(value));
const sizes = sizesFor(rt, {
  numPages: num(flags.pages, defaults.pages),
  swapPages: num(flags["swap-pages"], defaults.swap),
  ...(flags.layers ? { numLayers: Number(flags.layers) } : {}),
  ...(flags["max-batch"] ? { maxBatch: Number(flags["max-batch"]) } : {}),
});

// ---- the workload --------------------------------------------------------------------------------
interface Arrival {
  at: number; // seconds from start
  prompt: number[];
  output: number;
}

let seed = Number(flags.seed) >>> 0 || 1;
const random = () => {
  seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0; // LCG: reproducible
  return seed / 2 ** 32;
};

function sampler(spec: string): () => number {
  const [kind, a = "0", b = "0"] = spec.split(":");
  const x = Number(a);
  const y = Number(b);
  if (kind === "fixed") return () => x;
  if (kind === "uniform") return () => x + Math.floor(random() * (y - x + 1));
  if (kind === "lognormal")
    // Box-Muller; median x, shape y
    return () =>
      Math.max(
        1,
        Math.round(x * Math.exp(y * Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random()))),
      );
  throw new Error(`distribution "${spec}" is not uniform:a:b, lognormal:median:sigma or fixed:n`);
}

const maxContext = sizes.numPages * sizes.pageSize;
const systemPrompt = Array.from({ length: num(flags["shared-prefix"], defaults.shared) }, (_, i) => 1000 + i);
let nextToken = 100_000; // prompt ids unique to each request, after the shared system prompt
function makePrompt(length: number): number[] {
  const shared = random() < Number(flags["shared-fraction"]) ? systemPrompt.slice(0, length - 1) : [];
  return [...shared, ...Array.from({ length: length - shared.length }, () => nextToken++)];
}

function workload(): Arrival[] {
  if (flags.trace) {
    const text = readFileSync(flags.trace, "utf8").trim();
    const rows = (text.startsWith("[") ? JSON.parse(text) : text.split("\n").map((l) => JSON.parse(l))) as {
      arrival: number;
      prompt: number;
      output: number;
    }[];
    return rows.map((r) => ({ at: r.arrival, prompt: makePrompt(r.prompt), output: r.output }));
  }
  const count = num(flags.requests, defaults.requests);
  const rate = num(flags.rate, defaults.rate);
  const promptLength = sampler(flags.prompt ?? defaults.prompt);
  const outputLength = sampler(flags.output ?? defaults.output);
  let at = 0;
  return Array.from({ length: count }, () => {
    if (rate > 0) at += -Math.log(1 - random()) / rate; // exponential gaps: Poisson arrivals
    // Keep every request servable alone, so failures in the report mean a scheduler problem.
    const prompt = Math.min(promptLength(), maxContext / 2);
    return { at, prompt: makePrompt(prompt), output: Math.max(1, Math.min(outputLength(), maxContext / 2)) };
  });
}

// ---- the paths -----------------------------------------------------------------------------------
const paths = parsePaths(flags.path);
const policy = flags.policy as "adaptive" | "baseline" | "persistent";
const round = (x: number, digits = 3) => Number(x.toFixed(digits));
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
const date = new Date().toISOString();
const stamp = date.slice(0, 19).replace(/[:T]/g, "-");
const deviceSlug = rt.backend === "cuda" ? slug(rt.info.name) : "cpu";
const meta = {
  device: rt.info.name,
  backend: rt.backend,
  commit: commit(),
  date,
  model: "synthetic (deterministic activations; the attention, cache and scheduling are real)",
  timing: "wall clock per step (performance.now): appends, plan, the step's GPU work and its awaited completion",
};

/** Serves the arrivals with a Scheduler on one path, in wall-clock time. */
async function replay(path: "device" | "host", arrivals: Arrival[], record?: { ids: number[]; lengths: number[] }[]) {
  const { numLayers, numQoHeads, numKvHeads, headDim, pageSize, numPages, swapPages, maxBatch, dtype } = sizes;
  const cache = rt.createKVCache({
    numLayers,
    numPages,
    pageSize,
    numKvHeads,
    headDim,
    dtype,
    maxSequences: 4 * maxBatch, // running plus preempted (swapped sequences keep their row)
    maxPagesPerSequence: numPages,
    swapPages,
  });
  const engine = rt.createDecodeEngine({ cache, numQoHeads, maxBatch, policy });
  const made = makeRunner(path, rt, cache, engine, sizes);
  const runner = record ? recording(made.runner, record) : made.runner;
  const scheduler = new Scheduler({ cache, runner, maxBatch, swap: swapPages > 0 });
  const start = performance.now();
  const clock = () => (performance.now() - start) / 1000;
  const timeline: (StepReport & { t: number })[] = [];
  scheduler.onStep((r) => timeline.push({ ...r, t: clock() }));
  const ttft: number[] = [];
  const latency: number[] = [];
  let failed = 0;
  const follow = async (arrival: Arrival) => {
    const handle = scheduler.submit({ prompt: arrival.prompt, maxTokens: arrival.output });
    try {
      for await (const event of handle) if (event.index === 0) ttft.push(clock() - arrival.at);
      latency.push(clock() - arrival.at);
    } catch (error) {
      failed++;
      console.error(`${path} path, request ${handle.id}: ${(error as Error).message}`);
    }
  };
  const followers: Promise<void>[] = [];
  let next = 0;
  while (next < arrivals.length || scheduler.busy) {
    while (next < arrivals.length && arrivals[next]!.at <= clock()) followers.push(follow(arrivals[next++]!));
    if (scheduler.busy) await scheduler.step();
    else await Bun.sleep(Math.max(0, (arrivals[next]!.at - clock()) * 1000));
    await null; // lets the followers see this step's tokens
  }
  await Promise.all(followers);
  const wall = clock();
  const cacheAfter = cache.stats();
  const t = scheduler.totals;
  await scheduler.close();
  const graphs = made.stats();
  made.dispose();
  engine.dispose();
  cache.dispose();
  const busy = timeline.filter((r) => r.batch > 0);
  const entry = pathEntry(path, {
    tokens: t.generatedTokens,
    seconds: wall,
    stepUs: busy.map((r) => r.timeMs * 1000),
    batches: busy.map((r) => r.batch),
    contexts: busy.map((r) => r.contextTokens / r.batch),
    extra: {
      tokens_per_busy_s: round(t.generatedTokens / (t.busyMs / 1000), 1),
      ttft_s: { p50: round(quantile(ttft, 0.5)), p99: round(quantile(ttft, 0.99)) },
      latency_s: { p50: round(quantile(latency, 0.5)), p99: round(quantile(latency, 0.99)) },
      kv_utilisation: {
        mean: round(mean(busy.map((r) => r.kvUtilisation))),
        max: round(Math.max(0, ...busy.map((r) => r.kvUtilisation))),
      },
      waste_fraction: {
        mean: round(mean(busy.map((r) => r.wasteFraction)), 4),
        max: round(Math.max(0, ...busy.map((r) => r.wasteFraction)), 4),
      },
      kernels: countBy(busy.map((r) => r.kernel)),
      totals: { ...t, busyMs: round(t.busyMs, 1), stepTime: undefined, ttft: undefined, itl: undefined },
      failed_requests: failed,
      cache_after: cacheAfter,
      ...(graphs ? { graphs } : {}),
    },
  });
  return { entry, timeline, failed };
}

/** Attention alone on recorded batches: each step's rows at the recorded context lengths. */
function attentionReplay(steps: { ids: number[]; lengths: number[] }[]): PathEntry {
  const { numLayers, numKvHeads, headDim, pageSize, dtype, numQoHeads } = sizes;
  const maxBatch = Math.max(1, ...steps.map((s) => s.ids.length));
  // Its own pages: no prefix sharing here, so as many as the largest step holds.
  const pages = Math.max(1, ...steps.map((s) => s.lengths.reduce((n, len) => n + Math.ceil(len / pageSize), 0)));
  const longest = Math.max(1, ...steps.flatMap((s) => s.lengths));
  const cache = rt.createKVCache({
    numLayers,
    numPages: pages + 2 * maxBatch,
    pageSize,
    numKvHeads,
    headDim,
    dtype,
    maxSequences: 2 * maxBatch + 2,
    maxPagesPerSequence: Math.ceil(longest / pageSize) + 1,
  });
  const engine = rt.createDecodeEngine({ cache, numQoHeads, maxBatch, policy });
  const timer = new AttentionTimer(rt, engine, cache, numLayers, maxBatch);
  const replayer = new BatchReplayer(cache);
  const stepUs: number[] = [];
  const gpuUs: number[] = [];
  const kernels: string[] = [];
  for (const step of steps) {
    const { wallUs, gpuUs: g, kernel } = timer.step(replayer.batch(step.ids, step.lengths));
    stepUs.push(wallUs);
    gpuUs.push(g);
    kernels.push(kernel);
  }
  timer.dispose();
  engine.dispose();
  cache.dispose();
  const tokens = steps.reduce((n, s) => n + s.ids.length, 0);
  return pathEntry("attention", {
    tokens,
    seconds: stepUs.reduce((a, b) => a + b, 0) / 1e6,
    stepUs,
    batches: steps.map((s) => s.ids.length),
    contexts: steps.map((s) => mean(s.lengths)),
    extra: { gpu_us_p50: round(quantile(gpuUs, 0.5), 1), kernels: countBy(kernels) },
  });
}

function write(out: string, report: object, markdown: string): void {
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(report, null, 1));
  writeFileSync(out.replace(/\.json$/, ".md"), `${markdown}\n`);
}

if (flags.mode === "fixed") {
  const list = (text: string | undefined, fallback: number[]) => (text ? text.split(",").map(Number) : fallback);
  const options = {
    batches: list(flags.batches, gpu ? [8, 16, 32, 64, 128] : [2, 4]),
    contexts: list(flags.contexts, gpu ? [4096, 8192, 16384, 32768] : [64, 128]),
    steps: num(flags.steps, gpu ? 32 : 3),
    warmup: num(flags.warmup, gpu ? 4 : 1),
    policy,
    memoryFraction: Number(flags["memory-fraction"]),
  };
  const { cells, skipped } = await runFixed(rt, sizes, paths, options, (line) => console.log(line));
  const report = { ...meta, mode: "fixed", config: { ...sizes, ...options, paths }, cells, skipped };
  const out = flags.out ?? `bench/results/serve-fixed-${stamp}-${deviceSlug}.json`;
  const rows = cells.flatMap((c: FixedCell) => c.paths.map((e) => ({ ...e, cell: `B${c.batch} x ${c.context}` })));
  const markdown = [
    `# Serving paths, fixed batches: ${meta.device} (${rt.backend}), ${date}, commit ${meta.commit}`,
    "",
    barTable(cells),
    "",
    table(rows),
    ...(skipped.length ? ["", `Skipped (memory): ${skipped.join("; ")}`] : []),
  ].join("\n");
  write(out, report, markdown);
  console.log(markdown);
  console.log(`wrote ${out} and its .md table`);
  const missed = cells.filter((c) => c.bar.within_1_15x_of_attention === false || c.bar.at_least_3x_host === false);
  if (missed.length) console.log(`bar missed in ${missed.length} of ${cells.length} cells`);
} else if (flags.mode === "trace") {
  const arrivals = workload();
  const entries: PathEntry[] = [];
  const recorded: { ids: number[]; lengths: number[] }[] = [];
  let timeline: Awaited<ReturnType<typeof replay>>["timeline"] = [];
  let failed = 0;
  for (const path of paths) {
    if (path === "attention") {
      entries.push(attentionReplay(recorded));
      continue;
    }
    // The attention path replays the first served path's batches (the device path's when it runs).
    const first = recorded.length === 0 && paths.includes("attention");
    const result = await replay(path, arrivals, first ? recorded : undefined);
    entries.push(result.entry);
    if (timeline.length === 0) timeline = result.timeline;
    failed += result.failed;
    console.log(`${path}: ${result.entry.tokens_per_s} tokens/s, step p50 ${result.entry.step_us_p50} us`);
  }
  const ratioOf = (a: string, b: string, field: "tokens_per_s" | "step_us_p50") => {
    const x = entries.find((e) => e.path === a)?.[field],
      y = entries.find((e) => e.path === b)?.[field];
    return x === undefined || y === undefined || y === 0 ? null : round(x / y);
  };
  const report = {
    ...meta,
    mode: "trace",
    config: { ...sizes, policy, requests: arrivals.length, paths, flags },
    paths: entries,
    // The bar: device tokens/s >= 3x the host path's; device step within 1.15x of attention alone.
    ratios: {
      device_over_host_tokens: ratioOf("device", "host", "tokens_per_s"),
      device_over_attention_step: ratioOf("device", "attention", "step_us_p50"),
    },
    timeline_path: paths.find((p) => p !== "attention") ?? null,
    timeline: timeline.map(
      (r): TimelineRow => ({
        t: round(r.t),
        step_ms: round(r.timeMs),
        batch: r.batch,
        waiting: r.waiting,
        swapped: r.swapped,
        kv: round(r.kvUtilisation),
        waste: round(r.wasteFraction, 4),
        preempted: r.preemptedBySwap + r.preemptedByRecompute,
        prefix_hits: r.prefixHitTokens,
        kernel: r.kernel,
      }),
    ),
  };
  const out = flags.out ?? `bench/results/serve-${stamp}-${deviceSlug}.json`;
  const svgPath = flags.svg ?? `${out.replace(/\.json$/, "")}.svg`;
  const markdown = [
    `# Serving paths, trace: ${meta.device} (${rt.backend}), ${date}, commit ${meta.commit}`,
    "",
    `${arrivals.length} requests; step times in microseconds; the attention path replays the ${report.timeline_path} path's batches.`,
    "",
    table(entries),
    "",
    `device / host tokens/s: ${report.ratios.device_over_host_tokens} (bar >= 3); device / attention step p50: ${report.ratios.device_over_attention_step} (bar <= 1.15)`,
  ].join("\n");
  write(out, report, markdown);
  const title = `${meta.device} (${rt.backend}), ${report.timeline_path} path: ${arrivals.length} requests, ${entries[0]?.tokens_per_s} tok/s`;
  writeFileSync(svgPath, plot(report.timeline, title));
  console.log(markdown);
  console.log(`wrote ${out}, its .md table and ${svgPath}`);
  if (failed > 0) process.exitCode = 1;
} else throw new Error(`--mode ${flags.mode} is not trace or fixed`);

function countBy(xs: string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const x of xs) counts[x] = (counts[x] ?? 0) + 1;
  return counts;
}

function slug(name: string): string {
  return name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-|-$/g, "");
}

/** Three panels over time: KV utilisation and waste; batch, waiting and swapped; step time. */
interface TimelineRow {
  t: number;
  step_ms: number;
  batch: number;
  waiting: number;
  swapped: number;
  kv: number;
  waste: number;
  preempted: number;
  prefix_hits: number;
  kernel: string;
}

function plot(rows: TimelineRow[], title: string): string {
  const W = 900,
    H = 170,
    L = 60,
    PAD = 30;
  const tMax = Math.max(1e-3, ...rows.map((r) => r.t));
  const x = (t: number) => L + (t / tMax) * (W - L - 20);
  const panel = (
    index: number,
    label: string,
    yMax: number,
    series: [string, string, (r: (typeof rows)[number]) => number][],
  ) => {
    const top = PAD + index * (H + PAD);
    const y = (v: number) => top + H - (v / yMax) * H;
    const lines = series.map(([name, color, f], i) => {
      const points = rows.map((r) => `${x(r.t).toFixed(1)},${y(f(r)).toFixed(1)}`).join(" ");
      return (
        `<polyline fill="none" stroke="${color}" stroke-width="1.2" points="${points}"/>` +
        `<text x="${W - 150}" y="${top + 14 + 14 * i}" fill="${color}" font-size="12">${name}</text>`
      );
    });
    const preempt = rows
      .filter((r) => r.preempted > 0)
      .map((r) => `<line x1="${x(r.t)}" x2="${x(r.t)}" y1="${top + H}" y2="${top + H - 6}" stroke="#c00"/>`);
    return [
      `<rect x="${L}" y="${top}" width="${W - L - 20}" height="${H}" fill="none" stroke="#999"/>`,
      `<text x="4" y="${top + 12}" font-size="12">${label}</text>`,
      `<text x="${L - 4}" y="${top + 10}" font-size="10" text-anchor="end">${round(yMax, 2)}</text>`,
      `<text x="${L - 4}" y="${top + H}" font-size="10" text-anchor="end">0</text>`,
      ...lines,
      ...preempt,
    ].join("\n");
  };
  const batchMax = Math.max(1, ...rows.map((r) => Math.max(r.batch, r.waiting, r.swapped)));
  const stepMax = Math.max(1e-3, ...rows.map((r) => r.step_ms));
  const height = PAD + 3 * (H + PAD) + 10;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" font-family="sans-serif">`,
    `<text x="${L}" y="18" font-size="14">${title.replace(/&/g, "&amp;").replace(/</g, "&lt;")}</text>`,
    panel(0, "KV pages", 1, [
      ["utilisation", "#1f77b4", (r) => r.kv],
      ["waste", "#ff7f0e", (r) => r.waste],
    ]),
    panel(1, "requests", batchMax, [
      ["batch", "#2ca02c", (r) => r.batch],
      ["waiting", "#9467bd", (r) => r.waiting],
      ["swapped", "#d62728", (r) => r.swapped],
    ]),
    panel(2, "step ms", stepMax, [["step time", "#333", (r) => r.step_ms]]),
    `<text x="${W / 2}" y="${height - 4}" font-size="11" text-anchor="middle">seconds (red ticks: preemptions)</text>`,
    "</svg>",
  ].join("\n");
}
