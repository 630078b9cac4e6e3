// The results tree shows the current state: one decode run per GPU in the fixed format (DESIGN.md), and
// the README, the docs and the history point only at files that exist.
import { describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { resolve } from "node:path";

const root = resolve(import.meta.dir, "..");
const resultsDir = resolve(root, "bench/results");
const DECODE_RUN = /^decode-(\d{4}-\d{2}-\d{2})-([a-z0-9]+)\.(json|md|svg)$/;
const ROW_FIELDS = [
  "workload",
  "step",
  "policy",
  "kernel",
  "batch",
  "tokens",
  "kv_bytes",
  "kernel_us",
  "wall_us",
  "wall_us_32_layers",
  "gbps",
  "pct_ceiling",
];

describe("bench/results", () => {
  const files = readdirSync(resultsDir);

  test("holds files only, no per-version folders, and one decode run per GPU with its table", () => {
    const folders = readdirSync(resultsDir, { withFileTypes: true }).filter((e) => e.isDirectory());
    expect(folders.map((e) => e.name)).toEqual([]);
    const runs = new Map<string, Set<string>>();
    for (const name of files) {
      const m = name.match(DECODE_RUN);
      if (!m) continue;
      const gpu = m[2]!;
      if (!runs.has(gpu)) runs.set(gpu, new Set());
      runs.get(gpu)!.add(`${m[1]}.${m[3]}`);
    }
    expect(runs.size).toBeGreaterThan(0);
    for (const [gpu, found] of runs) {
      const dates = new Set([...found].map((f) => f.split(".")[0]));
      expect({ gpu, dates: dates.size }).toEqual({ gpu, dates: 1 });
      const [date] = dates;
      expect({ gpu, json: found.has(`${date}.json`), md: found.has(`${date}.md`) }).toEqual({
        gpu,
        json: true,
        md: true,
      });
    }
    expect(files).toContain("HISTORY.md");
  });

  test("each decode run has the fixed fields and a row per step and policy", () => {
    for (const name of files.filter((f) => DECODE_RUN.test(f) && f.endsWith(".json"))) {
      const run = JSON.parse(readFileSync(resolve(resultsDir, name), "utf8"));
      for (const field of ["device", "commit", "date", "ceiling_gbps", "timing", "rows"])
        expect([name, field in run]).toEqual([name, true]);
      expect(run.rows.length).toBeGreaterThan(0);
      for (const row of run.rows) expect(ROW_FIELDS.filter((f) => !(f in row))).toEqual([]);
      const policies = new Set(run.rows.map((r: { policy: string }) => r.policy));
      expect([...policies].sort()).toEqual(["adaptive", "baseline", "persistent"]);
    }
  });
});

describe("documentation paths", () => {
  // Backquoted repository paths (`bench/x.ts`, `docs/kernels.md`) and relative markdown links.
  const documents = ["README.md", "docs/kernels.md", "docs/notebook.md", "bench/results/HISTORY.md"];
  test.each(documents)("every file %s names exists", (doc) => {
    const text = readFileSync(resolve(root, doc), "utf8");
    const quoted = [...text.matchAll(/`((?:bench|docs|lib|test|examples|scripts|cuda)\/[\w./-]*)`/g)].map((m) =>
      resolve(root, m[1]!),
    );
    const linked = [...text.matchAll(/\]\(((?:\.\.?\/)?[\w./-]+\.(?:md|svg|json|ts))\)/g)].map((m) =>
      resolve(root, doc, "..", m[1]!),
    );
    const missing = [...quoted, ...linked]
      .filter((path) => !existsSync(path))
      .map((path) => path.slice(root.length + 1));
    expect(missing).toEqual([]);
  });
});
