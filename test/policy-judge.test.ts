// Calibration's decision rule on synthetic timings: noisy ties give no preference, clear wins are kept,
// and a cell keeps a kernel only where it holds on every step kind.
import { describe, expect, test } from "bun:test";
import { judgeCell, judgeStep, quantile } from "../lib/policy/judge";
import { seeded } from "../lib/random";
import type { StepMeasurement } from "../lib/policy/table";

const rule = { margin: 0.01, agreement: 0.8 }; // calibrate's defaults

/** `rounds` paired timings: each kernel's true time times log-normal noise of `noise`, plus a shared drift. */
function rounds(seed: number, n: number, baseUs: number, persUs: number, noise: number, drift = 0) {
  const random = seeded(Math.imul(seed, 0x9e3779b9)); // spread small seeds over the generator's state
  const gaussian = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const base: number[] = [],
    pers: number[] = [];
  for (let r = 0; r < n; r++) {
    const shared = Math.exp(drift * gaussian()); // clocks move both kernels of a pair alike
    base.push(baseUs * shared * Math.exp(noise * gaussian()));
    pers.push(persUs * shared * Math.exp(noise * gaussian()));
  }
  return { base, pers };
}

describe("judgeStep", () => {
  test("noisy ties give no preference, over many reruns", () => {
    for (let seed = 1; seed <= 300; seed++)
      for (const noise of [0.005, 0.02, 0.05]) {
        const { base, pers } = rounds(seed, 15, 100, 100 * (1 + (seed % 3) * 0.005), noise);
        expect(judgeStep("skewed", base, pers, rule).choice).toBe("none");
      }
  });

  test("clear wins are kept, for either kernel, over many reruns", () => {
    for (let seed = 1; seed <= 300; seed++) {
      const fast = rounds(seed, 15, 100, 90, 0.01, 0.05);
      expect(judgeStep("skewed", fast.base, fast.pers, rule).choice).toBe("persistent");
      const slow = rounds(seed, 15, 80, 100, 0.02);
      expect(judgeStep("uniform", slow.base, slow.pers, rule).choice).toBe("baseline");
    }
  });

  test("a gain beyond the margin but not beyond the cell's own spread is no preference", () => {
    const kept: string[] = [];
    for (let seed = 1; seed <= 300; seed++) {
      const { base, pers } = rounds(seed, 15, 104, 100, 0.08);
      const step = judgeStep("skewed", base, pers, rule);
      // paired ratios of two 8% noises swing by about 11%; half their central 80% is about 14%
      expect(step.spread).toBeGreaterThan(0.04);
      expect(step.spread).toBeLessThan(0.3);
      if (step.choice !== "none") kept.push(step.choice);
    }
    // 15 rounds can still draw a run whose swing looks small: rare, and never the slower kernel
    expect(kept.length).toBeLessThanOrEqual(3);
    expect(kept).not.toContain("baseline");
  });

  test("a small gain with tight timings is kept", () => {
    for (let seed = 1; seed <= 300; seed++) {
      const { base, pers } = rounds(seed, 15, 103, 100, 0.002, 0.03);
      const step = judgeStep("skewed", base, pers, rule);
      expect(step.spread).toBeLessThan(0.01);
      expect(step.choice).toBe("persistent");
    }
  });

  test("a steady gain under the margin is no preference", () => {
    for (let seed = 1; seed <= 100; seed++) {
      const { base, pers } = rounds(seed, 15, 100.5, 100, 0.001);
      expect(judgeStep("skewed", base, pers, rule).choice).toBe("none");
    }
  });

  test("a shared drift (clocks) does not hide a clear win: the rounds are paired", () => {
    const { base, pers } = rounds(5, 15, 100, 93, 0.003, 0.2);
    const step = judgeStep("skewed", base, pers, rule);
    expect(step.choice).toBe("persistent");
    expect(step.spread).toBeLessThan(0.02);
  });

  test("the record holds the medians, gain, spread and agreement", () => {
    const step = judgeStep("uniform", [10, 10, 10, 10, 10], [8, 8, 8, 8, 12], rule);
    expect(step).toMatchObject({ kind: "uniform", rounds: 5, baselineUs: 10, persistentUs: 8, agreement: 0.8 });
    expect(step.gain).toBeCloseTo(0.25, 10);
    expect(step.choice).toBe("persistent");
    // one round in five lost: below an agreement of 0.9, the same timings are no preference
    expect(judgeStep("uniform", [10, 10, 10, 10, 10], [8, 8, 8, 8, 12], { ...rule, agreement: 0.9 }).choice).toBe(
      "none",
    );
  });

  test("timings that are not paired are refused", () => {
    expect(() => judgeStep("skewed", [1, 2], [1], rule)).toThrow("paired");
    expect(() => judgeStep("skewed", [], [], rule)).toThrow("paired");
  });
});

describe("judgeCell", () => {
  const step = (choice: StepMeasurement["choice"], gain: number): StepMeasurement => ({
    kind: "skewed",
    rounds: 15,
    baselineUs: 10 * (1 + gain),
    persistentUs: 10,
    gain,
    spread: 0.005,
    agreement: 1,
    choice,
  });

  test("a kernel chosen on every step is kept", () => {
    expect(judgeCell(8, 4096, [step("persistent", 0.1), step("persistent", 0.05)], rule).choice).toBe("persistent");
  });
  test("a kernel chosen on one step and within the margin on the other is kept", () => {
    expect(judgeCell(8, 4096, [step("baseline", -0.1), step("none", 0.005)], rule).choice).toBe("baseline");
  });
  test("a kernel that wins on skewed rows but loses on equal rows is no preference", () => {
    expect(judgeCell(8, 4096, [step("persistent", 0.06), step("none", -0.03)], rule).choice).toBe("none");
    expect(judgeCell(8, 4096, [step("persistent", 0.06), step("baseline", -0.06)], rule).choice).toBe("none");
  });
  test("no step with a choice is no preference", () => {
    expect(judgeCell(1, 512, [step("none", 0.01)], rule).choice).toBe("none");
  });
});

test("quantiles interpolate between order statistics", () => {
  expect(quantile([3, 1, 2], 0.5)).toBe(2);
  expect(quantile([1, 2, 3, 4], 0.5)).toBe(2.5);
  expect(quantile([0, 10], 0.9)).toBeCloseTo(9, 10);
  expect(quantile([7], 0.1)).toBe(7);
});
