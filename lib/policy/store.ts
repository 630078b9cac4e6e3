// Calibrations on disk, keyed by GPU name, library version, model shape and the engine settings that change
// kernel timing, so an engine on the same machine loads its table without measuring again (and never one
// measured with other kernels: tensor-core timings say nothing about CUDA cores). Directory: $PKV_CACHE_DIR, else
// $XDG_CACHE_HOME/persistentkv, else ~/.cache/persistentkv.
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { readEnv } from "../env";
import { native, ABI_VERSION } from "../ffi/loader";
import type { EngineSettings } from "../engine";
import type { ModelShape } from "./sizing";
import { BATCH_BUCKETS, type CellMeasurement, isChoice, type PolicyTable, TOKEN_BUCKETS } from "./table";

interface StoredPolicy {
  key: string;
  date: string;
  choices: number[];
  measurements: CellMeasurement[];
}

export function calibrationDir(): string {
  const dir = readEnv("PKV_CACHE_DIR");
  if (dir) return dir;
  return join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "persistentkv");
}

/** The key of a table; `settings` as an engine reports them (math and loader resolved from "auto"). */
export function policyKey(
  gpu: string,
  shape: ModelShape,
  settings: Required<Omit<EngineSettings, "sharedPrefix">>,
): string {
  const { numQoHeads, numKvHeads, headDim, pageSize } = shape;
  // FP8 storage names its query type too (an f16 or bf16 key is the dtype alone, as before).
  const dtype = shape.dtype === "fp8_e4m3" ? `fp8_e4m3/${shape.queryDtype ?? "f16"}` : shape.dtype;
  const { math, loader, tailPercent, tailMinSplits, tailEndTiles, claimMinTiles } = settings;
  return (
    `${gpu} | persistentkv ${native().pkv_version()} abi ${ABI_VERSION} | ${numQoHeads}/${numKvHeads}x${headDim} page ${pageSize} ${dtype}` +
    ` | ${math} ${loader} tail ${tailPercent}/${tailMinSplits}/${tailEndTiles} claim ${claimMinTiles}`
  );
}

export function policyPath(key: string): string {
  return join(calibrationDir(), `policy-${Bun.hash(key).toString(16)}.json`);
}

export function savePolicy(key: string, table: PolicyTable): string {
  const path = policyPath(key);
  mkdirSync(calibrationDir(), { recursive: true });
  const stored: StoredPolicy = {
    key,
    date: new Date().toISOString(),
    choices: Array.from(table.choices),
    measurements: table.measurements,
  };
  writeFileSync(`${path}.tmp`, `${JSON.stringify(stored, null, 1)}\n`);
  renameSync(`${path}.tmp`, path); // never a half-written file for a concurrent reader
  return path;
}

/** The stored table for `key`, or undefined if none (or one that does not fit this build's grid). */
export function loadPolicy(key: string): PolicyTable | undefined {
  const path = policyPath(key);
  if (!existsSync(path)) return undefined;
  try {
    const stored = JSON.parse(readFileSync(path, "utf8")) as StoredPolicy;
    const cells = BATCH_BUCKETS * TOKEN_BUCKETS;
    // Int8Array.from would wrap 300 to 44 and turn "x" into 0: a cell that is not a choice voids the file.
    if (stored.key !== key || !Array.isArray(stored.choices) || stored.choices.length !== cells) return undefined;
    if (!stored.choices.every(isChoice)) return undefined;
    return { choices: Int8Array.from(stored.choices), measurements: stored.measurements };
  } catch {
    return undefined; // unreadable: the built-in rule serves until the next calibration rewrites it
  }
}
