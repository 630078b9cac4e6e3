// The readable side of a shared-prefix run (bench/shared.ts): the issue's three bars, judged from the
// rows, then the plan's host cost and every step with sharing on beside off.
//   bun bench/shared-report.ts bench/results/shared-<date>-<gpu>.json   (rewrites the .md beside it)
import { readFileSync, writeFileSync } from "node:fs";

export interface SharedRow {
  workload: string;
  step: number;
  /** "shared": a step of shared.json (pages shared by forks); "existing": a decode.json step (nothing shared). */
  source: "shared" | "existing";
  sharing: "on" | "off";
  /** The engine's sharedPrefix setting behind `sharing`. */
  setting: string;
  policy: string;
  kernel: string;
  batch: number;
  tokens: number;
  kv_bytes: number;
  /** Bytes the plan reads: kv_bytes less what shared tasks read once for several rows. */
  unique_kv_bytes: number;
  /** Bytes of the distinct pages in the rows' block tables: the least a step can read. */
  distinct_kv_bytes: number;
  kernel_us: number;
  wall_us: number;
  wall_us_32_layers: number;
  plan_us: number;
  gbps: number;
  pct_ceiling: number;
  gbps_unique: number;
  pct_ceiling_unique: number;
  shared_tasks: number;
  shared_rows: number;
  tasks: number;
  grid: number;
  max_splits: number;
  /** On rows: off kernel time / on kernel time. */
  speedup?: number;
}

export interface SharedResult {
  device: string;
  commit: string;
  date: string;
  ceiling_gbps: number;
  timing: string;
  sharing: { on: string; off: string };
  /** Whether each setting's adaptive policy had a calibrated table (else the built-in rule chose kernels). */
  calibrated?: { on: boolean; off: boolean };
  rows: SharedRow[];
}

/** The issue's bars: the step that must be 6x faster, and the size above which unique reads must reach 85%. */
export const BAR_WORKLOAD = "b64-prefix16k";
export const BAR_SPEEDUP = 6;
export const BAR_UNIQUE_BYTES = 128 * 2 ** 20;
export const BAR_UNIQUE_PCT = 85;
export const BAR_EXISTING_RATIO = 1.02;
export const PLAN_COST_WORKLOAD = "plan-cost";

const MiB = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
const met = (ok: boolean, any: boolean) => (!any ? "no such step in this run" : ok ? "**met**" : "**not met**");
/** The worst value of a bar's steps, or "-" where the run has none. */
const worst = (values: number[], pick: (...xs: number[]) => number, digits: number, unit: string) =>
  values.length === 0 ? "-" : `${pick(...values).toFixed(digits)}${unit}`;

/** On and off rows of the same step, in run order. */
export function pairs(rows: readonly SharedRow[]): { on: SharedRow; off: SharedRow }[] {
  const off = new Map(rows.filter((r) => r.sharing === "off").map((r) => [`${r.workload}/${r.step}`, r]));
  return rows
    .filter((r) => r.sharing === "on" && off.has(`${r.workload}/${r.step}`))
    .map((on) => ({ on, off: off.get(`${on.workload}/${on.step}`)! }));
}

export function sharedReport(result: SharedResult): string {
  const steps = pairs(result.rows);
  const bar = steps.filter((p) => p.on.workload === BAR_WORKLOAD);
  const big = steps.filter((p) => p.on.source === "shared" && p.on.unique_kv_bytes >= BAR_UNIQUE_BYTES);
  const existing = steps.filter((p) => p.on.source === "existing");
  const ratio = (p: { on: SharedRow; off: SharedRow }) => p.on.kernel_us / p.off.kernel_us;
  const speedups = bar.map((p) => p.off.kernel_us / p.on.kernel_us);
  const uniquePcts = big.map((p) => p.on.pct_ceiling_unique);
  const ratios = existing.map(ratio);
  const worstExisting = existing.find((p) => ratio(p) === Math.max(...ratios));
  const lines = [
    `# Shared-prefix decode: ${result.device}`,
    "",
    `commit ${result.commit.slice(0, 12)}, ${result.date}; streaming-read ceiling ${result.ceiling_gbps} GB/s (same run).`,
    `Sharing "on" is the engine setting sharedPrefix "${result.sharing.on}", "off" is "${result.sharing.off}" (every row reads its own pages).`,
    ...(result.calibrated
      ? [
          `Adaptive policy: ${result.calibrated.on ? "calibrated" : "built-in rule"} with sharing on, ${result.calibrated.off ? "calibrated" : "built-in rule"} with sharing off.`,
        ]
      : []),
    `Timing: ${result.timing}.`,
    "",
    "## Bars",
    "",
    "| bar | measured | verdict |",
    "|---|---|---|",
    `| at least ${BAR_SPEEDUP}x faster than unshared on ${BAR_WORKLOAD} (B64 behind 16K, 256-1K private) | worst step ${worst(speedups, Math.min, 2, "x")} over ${bar.length} steps | ${met(Math.min(...speedups) >= BAR_SPEEDUP, bar.length > 0)} |`,
    `| at least ${BAR_UNIQUE_PCT}% of the ceiling counting unique pages, shared steps of ${MiB(BAR_UNIQUE_BYTES)} MiB or more unique KV (sharing on) | worst ${worst(uniquePcts, Math.min, 1, "%")} over ${big.length} steps | ${met(Math.min(...uniquePcts) >= BAR_UNIQUE_PCT, big.length > 0)} |`,
    `| within ${BAR_EXISTING_RATIO}x of today (sharing off) on every decode.json step | worst on/off ${worst(ratios, Math.max, 3, "x")}${worstExisting ? ` (${worstExisting.on.workload}/${worstExisting.on.step})` : ""} over ${existing.length} steps | ${met(Math.max(...ratios) <= BAR_EXISTING_RATIO, existing.length > 0)} |`,
    "",
    "## Plan host cost",
    "",
    "| batch | plan us, sharing on | off | added us |",
    "|---|---|---|---|",
    ...steps
      .filter((p) => p.on.workload === PLAN_COST_WORKLOAD)
      .map(
        (p) => `| B${p.on.batch} | ${p.on.plan_us} | ${p.off.plan_us} | ${(p.on.plan_us - p.off.plan_us).toFixed(2)} |`,
      ),
    "",
    "## Steps",
    "",
    "Bandwidth counted two ways, as % of the ceiling: unique (the bytes the plan reads) and unshared (kv_bytes, what a step reading every row's pages reads).",
    "",
    "| workload | step | batch | KV MiB unshared | unique MiB | shared tasks | on us | off us | speedup | on % unique | on % unshared | off % | plan us on/off |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ...steps.map(
      ({ on, off }) =>
        `| ${on.workload} | ${on.step} | ${on.batch} | ${MiB(on.kv_bytes)} | ${MiB(on.unique_kv_bytes)} | ${on.shared_tasks} | ` +
        `${on.kernel_us} | ${off.kernel_us} | ${(off.kernel_us / on.kernel_us).toFixed(2)}x | ${on.pct_ceiling_unique} | ` +
        `${on.pct_ceiling} | ${off.pct_ceiling} | ${on.plan_us} / ${off.plan_us} |`,
    ),
    "",
  ];
  return lines.join("\n");
}

if (import.meta.main) {
  const path = process.argv[2];
  if (!path) throw new Error("usage: bun bench/shared-report.ts bench/results/shared-<date>-<gpu>.json");
  const result: SharedResult = JSON.parse(readFileSync(path, "utf8"));
  writeFileSync(path.replace(/\.json$/, ".md"), sharedReport(result));
}
