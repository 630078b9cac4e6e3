// The planner's native test (test/cuda/plan_test.cpp, built by `zig build` into zig-out/bin/plan-test):
// every strategy's invariants on random shapes, checked in C++ against plan_image.h, the layout's one
// definition. This file runs it so that the suite (and CI) fails when it does.
import { expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";

const binary = join(import.meta.dir, "..", "zig-out", "bin", "plan-test");

test("planner strategies keep their invariants on random shapes (native plan-test)", () => {
  expect(existsSync(binary) ? binary : `${binary} is missing: build first (npm run build)`).toBe(binary);
  const run = Bun.spawnSync([binary, "1500", "12345"]);
  const output = run.stdout.toString() + run.stderr.toString();
  expect(output).toContain("0 failures");
  expect({ exitCode: run.exitCode, output }).toEqual({ exitCode: 0, output });
});
