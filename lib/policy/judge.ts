// The decision rule of calibration: from paired timings of the two kernels, the kernel a cell keeps, or
// "none" where the measurement cannot tell them apart. A choice must hold on a rerun, so it needs a median
// gain larger than the margin plus the cell's own run-to-run spread, and wins by the margin in most rounds.
import type { DecodeKernel } from "../types";
import type { CellMeasurement, StepMeasurement } from "./table";

export interface DecisionRule {
  /** A kernel is kept only if it is faster by at least this fraction (median of the paired rounds)... */
  margin: number;
  /** ...and by at least the margin in this fraction of the paired rounds. */
  agreement: number;
}

/**
 * One step's verdict. Rounds are paired (both kernels back to back, each after an L2 flush), so their
 * ratio cancels drift that moves both kernels, such as clocks. The spread is half the central 80% range of
 * those ratios, recorded with the verdict: a gain that does not clear the margin by it could fall under the
 * margin (or change sign) on a rerun, so it is no preference.
 */
export function judgeStep(
  kind: StepMeasurement["kind"],
  base: readonly number[],
  pers: readonly number[],
  rule: DecisionRule,
): StepMeasurement {
  if (base.length === 0 || base.length !== pers.length)
    throw new Error(`judgeStep: ${base.length} baseline and ${pers.length} persistent rounds are not paired`);
  const logRatios = base.map((b, i) => Math.log(b / pers[i]!));
  const middle = quantile(logRatios, 0.5);
  const spreadLog = (quantile(logRatios, 0.9) - quantile(logRatios, 0.1)) / 2;
  const sign = Math.sign(middle);
  const agreement = logRatios.filter((x) => sign * x >= Math.log1p(rule.margin)).length / logRatios.length;
  // The median must clear the margin by the spread: a gain the rounds' own swing could make up is noise.
  const clear = sign !== 0 && Math.abs(middle) >= Math.log1p(rule.margin) + spreadLog && agreement >= rule.agreement;
  const winner: DecodeKernel = sign > 0 ? "persistent" : "baseline";
  return {
    kind,
    rounds: base.length,
    baselineUs: quantile(base, 0.5),
    persistentUs: quantile(pers, 0.5),
    gain: Math.expm1(middle),
    spread: Math.expm1(spreadLog),
    agreement,
    choice: clear ? winner : "none",
  };
}

/**
 * The cell's verdict over its steps: a kernel one step chose clearly, where no step chose the other and
 * on no step it is slower by the margin or more. A cell serves every batch of its row count and tokens, so
 * a kernel that wins on skewed rows but loses on equal ones is no preference (the built-in rule sees skew).
 */
export function judgeCell(
  batch: number,
  tokens: number,
  steps: StepMeasurement[],
  rule: DecisionRule,
): CellMeasurement {
  const chosen = new Set(steps.map((s) => s.choice).filter((c) => c !== "none"));
  const [kernel] = chosen;
  const need = Math.log1p(rule.margin);
  // log(1 + gain) is how much faster persistent is; its negation, how much faster baseline is.
  const advantage = (s: StepMeasurement) => (kernel === "persistent" ? 1 : -1) * Math.log1p(s.gain);
  const holds = chosen.size === 1 && steps.every((s) => advantage(s) > -need);
  return { batch, tokens, steps, choice: holds ? kernel! : "none" };
}

/** The p-quantile, interpolated between the nearest order statistics. */
export function quantile(xs: readonly number[], p: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const at = p * (sorted.length - 1);
  const lo = Math.floor(at);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return sorted[lo]! + (at - lo) * (sorted[hi]! - sorted[lo]!);
}
