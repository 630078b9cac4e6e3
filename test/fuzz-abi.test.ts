// Fuzz of the C ABI: batches of random bad, valid and wild calls to every entry point, each batch in a
// child process (test/support/fuzz-abi-child.ts) so that a crash is caught and named with its signal,
// seed and last call. CI runs 24,000 calls on the CPU backend (and a CUDA subset where a GPU is visible);
// PKV_FUZZ_CALLS=1000000 runs 10^6, PKV_FUZZ_SEED moves the seeds.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { gpuCount } from "./support/gpu.ts";
import { headerFunctions } from "./support/header.ts";

const CHILD = resolve(import.meta.dir, "support/fuzz-abi-child.ts");
const TOTAL = Number(process.env.PKV_FUZZ_CALLS ?? 24000);
const FIRST_SEED = Number(process.env.PKV_FUZZ_SEED ?? 1);
const PER_CHILD = TOTAL > 100000 ? 25000 : 6000;
const PARALLEL = 2;
const GPU_CALLS = Number(process.env.PKV_FUZZ_GPU_CALLS ?? 6000);

interface Summary {
  seed: number;
  calls: number;
  bad: number;
  valid: number;
  wild: number;
  ms: number;
  entryPoints: string[];
}

interface ChildResult {
  summary?: Summary;
  failure?: string; // why the child did not finish cleanly: signal or exit code, seed, last call, stderr
}

async function runChild(backend: string, calls: number, seed: number, extra: string[] = []): Promise<ChildResult> {
  const dir = mkdtempSync(join(tmpdir(), "pkv-fuzz-"));
  const lastCall = join(dir, "last-call");
  try {
    const child = Bun.spawn(
      [
        process.execPath,
        CHILD,
        "--backend",
        backend,
        "--calls",
        String(calls),
        "--seed",
        String(seed),
        "--last-call",
        lastCall,
        ...extra,
      ],
      { stdout: "pipe", stderr: "pipe", env: process.env },
    );
    const [stdout, stderr] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]);
    await child.exited;
    if (child.exitCode === 0 && !child.signalCode) return { summary: JSON.parse(stdout.trim().split("\n").at(-1)!) };
    let last = "(none recorded)";
    try {
      last = readFileSync(lastCall, "utf8").trim();
    } catch {}
    const how = child.signalCode ? `killed by ${child.signalCode}` : `exit code ${child.exitCode}`;
    return {
      failure: `fuzz child (backend ${backend}, seed ${seed}, ${calls} calls) ${how}; last call: ${last}\n${stderr.slice(-2000)}`,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs `total` calls in children of `perChild`, `PARALLEL` at a time; every failure is reported. */
async function fuzz(
  backend: string,
  total: number,
  perChild: number,
): Promise<{ summaries: Summary[]; failures: string[] }> {
  const seeds: number[] = [];
  for (let i = 0; i * perChild < total; i++) seeds.push(FIRST_SEED + i);
  const summaries: Summary[] = [],
    failures: string[] = [];
  let next = 0;
  const worker = async () => {
    while (next < seeds.length) {
      const i = next++;
      const result = await runChild(backend, Math.min(perChild, total - i * perChild), seeds[i]!);
      if (result.summary) summaries.push(result.summary);
      else failures.push(result.failure!);
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  return { summaries, failures };
}

// Entry points that return a status (the others, versions, names and sizes, are checked by every
// child directly).
const statusEntryPoints = headerFunctions()
  .filter((f) => f.returns === "pkv_status")
  .map((f) => f.name)
  .sort();

function expectCoverage(summaries: Summary[], total: number): void {
  const calls = summaries.reduce((n, s) => n + s.calls, 0);
  expect(calls).toBeGreaterThanOrEqual(total);
  const bad = summaries.reduce((n, s) => n + s.bad, 0),
    valid = summaries.reduce((n, s) => n + s.valid, 0);
  expect(bad).toBeGreaterThan(calls / 3); // mostly bad calls, with enough valid ones to build state
  expect(valid).toBeGreaterThan(calls / 10);
  const seen = new Set(summaries.flatMap((s) => s.entryPoints));
  expect(statusEntryPoints.filter((name) => !seen.has(name))).toEqual([]);
  const ms = Math.max(...summaries.map((s) => s.ms));
  console.log(
    `fuzz-abi: ${calls} calls (${bad} bad, ${valid} valid) in ${summaries.length} children, slowest ${ms} ms`,
  );
}

describe("C ABI fuzz", () => {
  test("the harness names a crash: signal, seed and the call that crashed", async () => {
    const result = await runChild("cpu", 200, 7, ["--crash-at", "60"]);
    expect(result.summary).toBeUndefined();
    expect(result.failure).toContain("killed by SIGSEGV");
    expect(result.failure).toContain("seed 7");
    expect(result.failure).toMatch(/last call: #60 \[\w+\] pkv_\w+\(/);
  });

  test(
    `${TOTAL} random calls on the CPU backend: no crash, no bad call returns PKV_OK, every error names its call`,
    async () => {
      const started = performance.now();
      const { summaries, failures } = await fuzz("cpu", TOTAL, PER_CHILD);
      expect(failures).toEqual([]);
      expectCoverage(summaries, TOTAL);
      if (TOTAL <= 24000) expect(performance.now() - started).toBeLessThan(60000);
    },
    Math.max(120000, TOTAL * 2),
  );

  test.skipIf(gpuCount === 0)(
    `${GPU_CALLS} random calls on the CUDA backend`,
    async () => {
      const { summaries, failures } = await fuzz("cuda", GPU_CALLS, 3000);
      expect(failures).toEqual([]);
      expectCoverage(summaries, GPU_CALLS);
    },
    300000,
  );
});
