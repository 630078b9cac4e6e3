// The shared-prefix benchmark (bench/shared.ts): its steps share pages as the workloads say, its table
// judges the bars from the numbers, and a --quick run on the CPU backend writes both settings' rows.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openRuntime } from "persistentkv";
import { type SharedResult, type SharedRow, sharedReport } from "../bench/shared-report";
import {
  buildStep,
  distinctKvBytes,
  RandomKV,
  releaseStep,
  rowLengths,
  type StepEntry,
  scaleStep,
  stepNeeds,
} from "../bench/shared-steps";
import { sharingSupported } from "../bench/sharing";

const root = new URL("..", import.meta.url).pathname;
const rt = openRuntime({ backend: "cpu" });
afterAll(() => rt.dispose());

// A fork of a fork: a 40-token prefix, two branches of +20 (the first with two rows), and a row alone.
const tree: StepEntry[] = [
  {
    prefix: 40,
    rows: [
      { prefix: 20, rows: [3, 5] },
      { prefix: 20, rows: [7] },
    ],
  },
  33,
];

describe("shared steps", () => {
  test("rows, lengths and the scaled step follow the entries", () => {
    expect(rowLengths(tree)).toEqual([63, 65, 67, 33]);
    expect(scaleStep(tree, 0.5, 1)).toEqual([{ prefix: 20, rows: [{ prefix: 10, rows: [2] }] }]);
    expect(stepNeeds(tree, 16)).toEqual({ pages: 20, sequences: 7, maxPagesPerSequence: 5 });
  });

  test("forked rows hold the same page ids for shared full pages, and their own pages past them", () => {
    using cache = rt.createKVCache({
      numLayers: 2,
      numPages: 64,
      pageSize: 16,
      numKvHeads: 1,
      headDim: 64,
      dtype: "f16",
      maxSequences: 8,
    });
    using kv = new RandomKV(rt, cache, 32);
    const built = buildStep(cache, kv, tree);
    const [a, b, c, alone] = built.rows.map((seq) => cache.pagesOf(seq)) as [
      Int32Array,
      Int32Array,
      Int32Array,
      Int32Array,
    ];
    expect(built.rows.map((s) => s.length)).toEqual([63, 65, 67, 33]);
    // 40 tokens: pages 0-1 are full and shared by all three forked rows; page 2 (8 tokens) each branch copies.
    expect([...b.subarray(0, 2)]).toEqual([...a.subarray(0, 2)]);
    expect([...c.subarray(0, 2)]).toEqual([...a.subarray(0, 2)]);
    expect(c[2]).not.toBe(a[2]);
    // Rows a and b fork one branch of 60 tokens: its pages 0-2 full (3 shared), page 3 (12 tokens) copied.
    expect([...b.subarray(0, 3)]).toEqual([...a.subarray(0, 3)]);
    expect(b[3]).not.toBe(a[3]);
    expect(alone.some((p) => a.includes(p) || c.includes(p))).toBe(false);
    // Distinct tokens, page by page: 32 shared by all, each branch's copied page 2 (16 + 16), row a's last
    // page (15), b's pages 3-4 (16 + 1), c's (16 + 3), and the row alone (33): 148 of the rows' 228.
    expect(distinctKvBytes(cache, built.rows, 256)).toBe(148 * 256);
    releaseStep(cache, built);
    expect(cache.stats().pagesUsed).toBe(0);
  });
});

function row(fields: Partial<SharedRow>): SharedRow {
  return {
    workload: "w",
    step: 0,
    source: "shared",
    sharing: "on",
    setting: "auto",
    policy: "adaptive",
    kernel: "persistent",
    batch: 64,
    tokens: 1,
    kv_bytes: 2 ** 30,
    unique_kv_bytes: 2 ** 28,
    distinct_kv_bytes: 2 ** 28,
    kernel_us: 100,
    wall_us: 110,
    wall_us_32_layers: 3300,
    plan_us: 3,
    gbps: 1,
    pct_ceiling: 1,
    gbps_unique: 1,
    pct_ceiling_unique: 90,
    shared_tasks: 8,
    shared_rows: 64,
    tasks: 100,
    grid: 264,
    max_splits: 1,
    ...fields,
  };
}

describe("shared-prefix table", () => {
  const result = (rows: SharedRow[]): SharedResult => ({
    device: "test",
    commit: "0",
    date: "2026-12-02",
    ceiling_gbps: 4465.7,
    timing: "t",
    sharing: { on: "auto", off: "off" },
    rows,
  });
  const bar = { workload: "b64-prefix16k" };
  const existing = { workload: "b8-zipf", source: "existing" as const };

  test("states each bar met from the numbers", () => {
    const md = sharedReport(
      result([
        row({ ...bar, kernel_us: 100 }),
        row({ ...bar, sharing: "off", setting: "off", kernel_us: 700, pct_ceiling_unique: 20 }),
        row({ ...existing, kernel_us: 101 }),
        row({ ...existing, sharing: "off", setting: "off", kernel_us: 100 }),
        row({ workload: "plan-cost", batch: 8, plan_us: 2.5 }),
        row({ workload: "plan-cost", batch: 8, sharing: "off", setting: "off", plan_us: 2 }),
      ]),
    );
    expect(md).toContain("worst step 7.00x over 1 steps | **met**");
    expect(md).toContain("worst 90.0% over 2 steps | **met**");
    expect(md).toContain("worst on/off 1.010x (b8-zipf/0) over 1 steps | **met**");
    expect(md).toContain("| B8 | 2.5 | 2 | 0.50 |");
  });

  test("and not met where a step misses", () => {
    const md = sharedReport(
      result([
        row({ ...bar, kernel_us: 200, pct_ceiling_unique: 80 }),
        row({ ...bar, sharing: "off", setting: "off", kernel_us: 700 }),
        row({ ...existing, kernel_us: 105 }),
        row({ ...existing, sharing: "off", setting: "off", kernel_us: 100 }),
      ]),
    );
    expect(md).toContain("worst step 3.50x over 1 steps | **not met**");
    expect(md).toContain("worst 80.0% over 1 steps | **not met**");
    expect(md).toContain("worst on/off 1.050x (b8-zipf/0) over 1 steps | **not met**");
  });
});

// Runs once the library accepts the sharedPrefix setting (shared-prefix decode); skips before.
describe.skipIf(!sharingSupported(rt))("bench/shared.ts --quick on the CPU backend", () => {
  test("writes rows for both settings; unique bytes never exceed unshared, and are fewer where pages are shared", () => {
    const dir = mkdtempSync(join(tmpdir(), "pkv-shared-"));
    try {
      const proc = Bun.spawnSync(
        [process.execPath, "bench/shared.ts", "--quick", "--backend", "cpu", "--on", "always", "--out", dir],
        { cwd: root, stdout: "pipe", stderr: "pipe", timeout: 120_000 },
      );
      if (proc.exitCode !== 0) console.error(proc.stdout.toString(), proc.stderr.toString());
      expect(proc.exitCode).toBe(0);
      const files = readdirSync(dir);
      const json = files.find((f) => /^shared-\d{4}-\d{2}-\d{2}-cpu\.json$/.test(f))!;
      expect(files).toContain(json.replace(/\.json$/, ".md"));
      const run: SharedResult = JSON.parse(readFileSync(join(dir, json), "utf8"));
      for (const field of ["device", "commit", "date", "ceiling_gbps", "timing", "rows"])
        expect(field in run).toBe(true);
      const steps = new Set(run.rows.map((r) => `${r.workload}/${r.step}`));
      for (const key of steps)
        expect([key, run.rows.filter((r) => `${r.workload}/${r.step}` === key).map((r) => r.sharing)]).toEqual([
          key,
          ["on", "off"],
        ]);
      const workloads = JSON.parse(readFileSync(join(root, "bench/workloads/shared.json"), "utf8")).workloads;
      for (const w of workloads) expect(steps.has(`${w.name}/0`)).toBe(true);
      expect(run.rows.some((r) => r.source === "existing")).toBe(true);
      let shared = 0;
      for (const r of run.rows) {
        expect(r.unique_kv_bytes).toBeLessThanOrEqual(r.kv_bytes);
        expect(r.unique_kv_bytes).toBeGreaterThanOrEqual(r.distinct_kv_bytes);
        expect(r.kernel_us).toBeGreaterThan(0);
        if (r.sharing === "off") {
          expect([r.workload, r.unique_kv_bytes, r.shared_tasks]).toEqual([r.workload, r.kv_bytes, 0]);
        } else if (r.distinct_kv_bytes < r.kv_bytes) {
          shared++;
          expect([r.workload, r.unique_kv_bytes < r.kv_bytes, r.shared_tasks > 0]).toEqual([r.workload, true, true]);
        } else expect(r.unique_kv_bytes).toBe(r.kv_bytes);
      }
      expect(shared).toBeGreaterThan(0);
      expect(readFileSync(join(dir, json.replace(/\.json$/, ".md")), "utf8")).toContain("## Bars");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
