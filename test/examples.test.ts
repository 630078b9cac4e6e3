// Smoke tests: each example runs to completion at small sizes and prints its key lines.
import { describe, expect, test } from "bun:test";
import { spawnExampleServer } from "./support/http-client";

const root = new URL("..", import.meta.url).pathname;

function run(args: string[], env: Record<string, string> = {}) {
  const proc = Bun.spawnSync([process.execPath, ...args], {
    cwd: root,
    env: { ...process.env, PKV_BACKEND: "cpu", ...env },
    stdout: "pipe",
    stderr: "pipe",
    timeout: 30_000,
  });
  const stdout = proc.stdout.toString();
  if (proc.exitCode !== 0) console.error(stdout, proc.stderr.toString());
  return { code: proc.exitCode, stdout };
}

describe("examples", () => {
  test("single-request.ts decodes token by token and frees its pages", () => {
    const { code, stdout } = run(["examples/single-request.ts"], { PKV_CONTEXT: "300", PKV_STEPS: "4" });
    expect(code).toBe(0);
    expect(stdout).toMatch(/step 0: context 301, kernel (baseline|persistent), [\d.]+ ms for \d+ layers, [\d.]+ GB\/s/);
    expect(stdout).toContain("step 3: context 304");
    expect(stdout).toContain("done: 4 tokens decoded, pages back in the pool: true");
  });

  test("b8-batch.ts prints kernel and bandwidth for every B8 step", () => {
    const { code, stdout } = run(["examples/b8-batch.ts"], { PKV_SCALE: "512", PKV_REPS: "1" });
    expect(code).toBe(0);
    const steps = stdout
      .split("\n")
      .filter((l) =>
        /^b8-\w+ step \d+: \d+ tokens, kernel (baseline|persistent), step \d+ us \(plan \+ run \+ sync\), [\d.]+ GB\/s/.test(
          l,
        ),
      );
    expect(steps.length).toBe(12); // 3 workloads x 4 steps
    for (const name of ["b8-bimodal", "b8-uniform", "b8-zipf"]) expect(stdout).toContain(`${name} step 3:`);
  });

  test("serve.ts starts, answers one request, and says how to call it", async () => {
    const { proc, url } = await spawnExampleServer();
    try {
      expect(url).toBeDefined();
      const response = await fetch(new URL("/generate", url), {
        method: "POST",
        body: JSON.stringify({ promptLength: 10, maxTokens: 2 }),
      });
      const body = await response.text();
      expect(body.match(/event: token/g)?.length).toBe(2);
      expect(body).toContain("event: done");
    } finally {
      proc.kill();
      await proc.exited;
    }
  }, 30_000); // on a GPU machine the server's start includes CUDA's (5 s was once too short there)
});

describe("bench/serve.ts", () => {
  const fs = require("node:fs");
  const dir = `${require("node:os").tmpdir()}/pkv-serve-${process.pid}`;

  test("replays a small Poisson load on the device, host and attention paths; writes JSON, table and plot", () => {
    const { code, stdout } = run([
      "bench/serve.ts",
      "--backend",
      "cpu",
      "--requests",
      "12",
      "--rate",
      "500",
      "--out",
      `${dir}/r.json`,
    ]);
    expect(code).toBe(0);
    const report = JSON.parse(fs.readFileSync(`${dir}/r.json`, "utf8"));
    expect(report.paths.map((p: { path: string }) => p.path)).toEqual(["device", "host", "attention"]);
    const [device, host, attention] = report.paths;
    for (const p of [device, host]) {
      expect(p.totals.finished).toBe(12);
      expect(p.failed_requests).toBe(0);
    }
    for (const p of report.paths) {
      expect(p.tokens_per_s).toBeGreaterThan(0);
      expect(p.step_us_p99).toBeGreaterThanOrEqual(p.step_us_p50);
    }
    expect(attention.steps).toBe(device.steps); // the device path's batches, replayed
    expect(attention.tokens).toBe(device.tokens);
    expect(report.timeline.length).toBe(device.totals.steps);
    expect(fs.readFileSync(`${dir}/r.svg`, "utf8")).toStartWith("<svg");
    expect(fs.readFileSync(`${dir}/r.md`, "utf8")).toContain("| trace | attention |");
    expect(stdout).toContain(`wrote ${dir}/r.json`);
  });

  test("--mode fixed steps one batch on every path and reports the bar's ratios", () => {
    const args = [
      "--backend",
      "cpu",
      "--mode",
      "fixed",
      "--batches",
      "2",
      "--contexts",
      "48",
      "--steps",
      "2",
      "--warmup",
      "1",
    ];
    const { code } = run(["bench/serve.ts", ...args, "--out", `${dir}/f.json`]);
    expect(code).toBe(0);
    const report = JSON.parse(fs.readFileSync(`${dir}/f.json`, "utf8"));
    expect(report.cells.length).toBe(1);
    const [cell] = report.cells;
    expect({ batch: cell.batch, context: cell.context }).toEqual({ batch: 2, context: 48 });
    expect(cell.paths.map((p: { path: string; steps: number }) => [p.path, p.steps])).toEqual([
      ["device", 2],
      ["host", 2],
      ["attention", 2],
    ]);
    expect(cell.device_over_attention_step).toBeGreaterThan(0);
    expect(cell.device_over_host_tokens).toBeGreaterThan(0);
    expect(fs.readFileSync(`${dir}/f.md`, "utf8")).toContain("| B2 | 48 |");
  });
});
