// The readable side of a decode benchmark run: per-step table with FlashInfer's best path beside ours, the
// bars against the physical limit and the peer, and the seed's ratios (adaptive over either kernel alone,
// synchronized wall).
//   bun bench/report.ts bench/results/decode-<date>-<gpu>.json   (rewrites the .md beside it)
import { readFileSync, writeFileSync } from "node:fs";

export interface DecodeRow {
  workload: string;
  step: number;
  /** The KV cache's storage ("f16" where absent: runs before FP8 pages). */
  dtype?: string;
  policy: string;
  kernel: string;
  batch: number;
  tokens: number;
  kv_bytes: number;
  kernel_us: number;
  wall_us: number;
  wall_us_32_layers: number;
  wall_us_32_layers_graph?: number;
  gbps: number;
  pct_ceiling: number;
  tasks?: number;
  grid?: number;
  max_splits?: number;
}
export interface DecodeResult {
  device: string;
  commit: string;
  date: string;
  ceiling_gbps: number;
  timing: string;
  policy?: string;
  rows: DecodeRow[];
}

/**
 * FlashInfer's kernel time (us) and % of ceiling per "workload/step", from a peers table: its best path
 * where the table has one column per path ("best us", peers-h200.md), else its one path (peers-h100.md).
 */
export function flashInferSteps(markdown: string): Map<string, { us: number; pct: number }> {
  const peers = new Map<string, { us: number; pct: number }>();
  let us = -1,
    pct = -1;
  for (const line of markdown.split("\n")) {
    const cells = line.split("|").map((c) => c.trim());
    if (cells[1] === "workload") {
      const best = cells.indexOf("best us");
      [us, pct] =
        best > 0
          ? [best, cells.indexOf("best % of ceiling")]
          : [cells.indexOf("FlashInfer us"), cells.indexOf("FlashInfer % of ceiling")];
    } else if (us > 0 && /^\d+$/.test(cells[2] ?? ""))
      peers.set(`${cells[1]}/${cells[2]}`, { us: Number(cells[us]), pct: Number(cells[pct]) });
  }
  return peers;
}

/** The peers table measured on this GPU (H200), else the H100 one. */
export function peersPath(device: string): URL {
  return new URL(device.includes("H200") ? "./workloads/peers-h200.md" : "./workloads/peers-h100.md", import.meta.url);
}

/** The physical-limit model: 6 us of fixed time plus the bytes at 95% of the streaming-read ceiling. */
export function limitUs(kvBytes: number, ceilingGbps: number): number {
  return 6 + kvBytes / (0.95 * ceilingGbps * 1e3);
}

const geomean = (xs: number[]) => Math.exp(xs.reduce((a, x) => a + Math.log(x), 0) / xs.length);
const f = (x: number, digits = 2) => x.toFixed(digits);

const dtypeOf = (row: DecodeRow) => row.dtype ?? "f16";

/**
 * The report of a run: one section per KV dtype (FlashInfer's rows are f16), and with FP8 beside f16 the
 * FP8 bars: its kernel time over f16's per step (better kernel of each; at most 0.55x with >= 512 MiB of f16
 * KV, 0.65x with 128-512 MiB, never above 1x on smaller steps) and its share of the read ceiling counting
 * codes and scales (>= 88% on the large steps).
 */
export function report(
  result: DecodeResult,
  flashinfer: Map<string, { us: number; pct: number }>,
  peers = peersPath(result.device),
): string {
  const dtypes = [...new Set(result.rows.map(dtypeOf))];
  if (dtypes.length === 1) return reportDtype(result, flashinfer, peers);
  const sections = dtypes.map((dtype) =>
    reportDtype(
      { ...result, rows: result.rows.filter((r) => dtypeOf(r) === dtype) },
      dtype === "f16" ? flashinfer : new Map(),
      peers,
      dtype,
    ),
  );
  return `${[...sections, fp8Section(result)].join("\n")}`;
}

function fp8Section(result: DecodeResult): string {
  const best = new Map<string, DecodeRow>(); // dtype/workload/step -> the faster kernel's row
  for (const row of result.rows) {
    const key = `${dtypeOf(row)}/${row.workload}/${row.step}`;
    if (row.policy !== "adaptive" && (!best.has(key) || row.kernel_us < best.get(key)!.kernel_us)) best.set(key, row);
  }
  const md = [
    "## FP8 pages against f16, the same steps in this run",
    "Better kernel of each dtype; FP8 bytes are codes plus a float scale per token and KV head (K and V).",
    "",
    "| workload | step | f16 KV MiB | FP8 KV MiB | f16 us (%) | FP8 us (%) | FP8 / f16 | bar |",
    "|---|---|---|---|---|---|---|---|",
  ];
  const misses: string[] = [];
  for (const [key, f8] of best) {
    if (!key.startsWith("fp8_e4m3/")) continue;
    const f16 = best.get(`f16/${f8.workload}/${f8.step}`);
    if (!f16) continue;
    const ratio = f8.kernel_us / f16.kernel_us;
    const mib = f16.kv_bytes / 2 ** 20;
    const bar = mib >= 512 ? 0.55 : mib >= 128 ? 0.65 : 1;
    const ceilingBar = mib >= 128 ? 88 : 0;
    const ok = ratio <= bar && f8.pct_ceiling >= ceilingBar;
    if (!ok) misses.push(`${f8.workload}/${f8.step} (${f(ratio, 3)}x, ${f8.pct_ceiling}%)`);
    md.push(
      `| ${f8.workload} | ${f8.step} | ${f(mib, 1)} | ${f(f8.kv_bytes / 2 ** 20, 1)} | ${f16.kernel_us} (${f16.pct_ceiling}) | ` +
        `${f8.kernel_us} (${f8.pct_ceiling}) | ${f(ratio, 3)} | <= ${bar}${ceilingBar ? `, >= ${ceilingBar}%` : ""} ${ok ? "ok" : "MISS"} |`,
    );
  }
  md.push("", `Steps that miss an FP8 bar: ${misses.length ? misses.join(", ") : "none"}.`);
  return `${md.join("\n")}\n`;
}

function reportDtype(
  result: DecodeResult,
  flashinfer: Map<string, { us: number; pct: number }>,
  peers: URL,
  dtype?: string,
): string {
  const byStep = new Map<string, Record<string, DecodeRow>>();
  for (const row of result.rows) {
    const key = `${row.workload}/${row.step}`;
    byStep.set(key, { ...byStep.get(key), [row.policy]: row });
  }
  const steps = [...byStep.entries()].filter(([, p]) => p.baseline && p.persistent && p.adaptive);
  const md: string[] = [
    `# Decode attention on ${result.device}${dtype ? `, ${dtype} KV` : ""} (${result.date.slice(0, 10)}, commit ${result.commit.slice(0, 10)})`,
    "",
    `Streaming-read ceiling measured in this run: ${f(result.ceiling_gbps, 1)} GB/s. Timing: ${result.timing}.`,
    `Adaptive policy: ${result.policy ?? "unknown"}. FlashInfer: its best path in bench/workloads/${peers.pathname.split("/").pop()} (same timing method, another run).`,
    "",
    "| workload | step | batch | KV MiB | baseline us (%) | persistent us (%) | adaptive: kernel, us (%) | FlashInfer us | adaptive vs FlashInfer | limit us | adaptive/baseline | adaptive/persistent | wall 1 layer us | wall 32 layers us | 32 layers, graph us |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ];
  const speedups: number[] = [];
  const slower: string[] = [];
  const under90: string[] = [];
  const overLimit: string[] = [];
  for (const [key, { baseline: b, persistent: p, adaptive: a }] of steps) {
    const fi = flashinfer.get(key)?.us;
    if (fi !== undefined) {
      speedups.push(fi / a!.kernel_us);
      if (a!.kernel_us > fi) slower.push(`${key} (${f(a!.kernel_us, 1)} vs ${fi} us)`);
    }
    const limit = limitUs(a!.kv_bytes, result.ceiling_gbps);
    if (a!.kernel_us > limit) overLimit.push(`${key} (${f(a!.kernel_us, 1)} vs ${f(limit, 1)} us)`);
    if (a!.kv_bytes >= 128 * 2 ** 20 && Math.max(b!.pct_ceiling, p!.pct_ceiling) < 90)
      under90.push(`${key} (${Math.max(b!.pct_ceiling, p!.pct_ceiling)}%)`);
    md.push(
      `| ${a!.workload} | ${a!.step} | ${a!.batch} | ${f(a!.kv_bytes / 2 ** 20, 1)} | ${b!.kernel_us} (${b!.pct_ceiling}) | ${p!.kernel_us} (${p!.pct_ceiling}) | ` +
        `${a!.kernel}, ${a!.kernel_us} (${a!.pct_ceiling}) | ${fi ?? "-"} | ${fi ? `${f(fi / a!.kernel_us)}x` : "-"} | ${f(limit, 1)} | ` +
        `${f(b!.kernel_us / a!.kernel_us)} | ${f(p!.kernel_us / a!.kernel_us)} | ${a!.wall_us} | ${a!.wall_us_32_layers} | ${a!.wall_us_32_layers_graph ?? "-"} |`,
    );
  }
  const vsBetter = steps.map(
    ([, s]) => Math.min(s.baseline!.kernel_us, s.persistent!.kernel_us) / s.adaptive!.kernel_us,
  );
  md.push(
    "",
    "## Bars",
    `- adaptive kernel time vs the better single kernel: worst ${f(Math.min(...vsBetter), 3)}x, geometric mean ${f(geomean(vsBetter), 3)}x (bar: >= 0.98x on every step)`,
    `- adaptive vs FlashInfer's best path, geometric mean over ${speedups.length} steps: ${f(geomean(speedups))}x (bar: >= 1.15x); steps slower than FlashInfer: ${slower.length ? slower.join(", ") : "none"} (bar: none)`,
    `- steps over the physical-limit model, 6 us + bytes / (0.95 x ceiling): ${overLimit.length ? overLimit.join(", ") : "none"} (bar: none)`,
    `- steps with >= 128 MiB of KV under 90% of the ceiling (better kernel): ${under90.length ? under90.join(", ") : "none"}`,
    "",
    "## The seed's ratios, measured here",
    "Synchronized wall time of 32-layer steps (plan + upload + 32 runs + sync, L2 cold), summed over each workload's steps;",
    "a ratio above 1 means adaptive serves the workload faster. The seed (RTX 3060) reported 1.06-1.27x on B8 and 1.40x on B1 bucketed.",
    "",
    "| workload | adaptive over baseline | adaptive over persistent | adaptive over the worse kernel | CUDA graph gain (adaptive, 32 layers) |",
    "|---|---|---|---|---|",
  );
  for (const workload of [...new Set(steps.map(([key]) => key.split("/")[0]!))]) {
    const mine = steps.filter(([key]) => key.startsWith(`${workload}/`)).map(([, s]) => s);
    const sum = (policy: string, field: "wall_us_32_layers" | "wall_us_32_layers_graph") =>
      mine.reduce((t, s) => t + (s[policy]![field] ?? Number.NaN), 0);
    const [wb, wp, wa] = ["baseline", "persistent", "adaptive"].map((p) => sum(p, "wall_us_32_layers")) as [
      number,
      number,
      number,
    ];
    const graph = sum("adaptive", "wall_us_32_layers_graph");
    md.push(
      `| ${workload} | ${f(wb / wa)} | ${f(wp / wa)} | ${f(Math.max(wb, wp) / wa)} | ${Number.isNaN(graph) ? "-" : `${f(wa / graph)}x`} |`,
    );
  }
  return `${md.join("\n")}\n`;
}

if (import.meta.main) {
  const input = process.argv[2];
  if (!input) throw new Error("usage: bun bench/report.ts <decode results .json>");
  const result = JSON.parse(readFileSync(input, "utf8")) as DecodeResult;
  const md = report(result, flashInferSteps(readFileSync(peersPath(result.device), "utf8")));
  writeFileSync(input.replace(/\.json$/, ".md"), md);
  console.log(md);
}
