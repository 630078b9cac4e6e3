// Slots wasted by paged allocation on a workload's context lengths: the unused tails of partial last
// pages, over all allocated slots, as the cache's own stats report them (CPU backend, one small layer).
//   bun bench/waste.ts [--workloads bench/workloads/decode.json] [--workload b128-serving] [--page-size 16] [--out f.json]
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import { openRuntime } from "persistentkv";

export interface WasteResult {
  workload: string;
  pageSize: number;
  steps: { sequences: number; tokens: number; allocatedSlots: number; wastedSlots: number; wasteFraction: number }[];
  allocatedSlots: number;
  wastedSlots: number;
  wasteFraction: number;
}

export const DEFAULT_WORKLOADS = resolve(import.meta.dir, "workloads/decode.json");

export function workloadSteps(path: string, name: string): number[][] {
  const data = JSON.parse(readFileSync(path, "utf8")) as { workloads: { name: string; steps: number[][] }[] };
  const workload = data.workloads.find((w) => w.name === name);
  if (!workload)
    throw new Error(`${path} has no workload "${name}" (it has ${data.workloads.map((w) => w.name).join(", ")})`);
  return workload.steps;
}

/** Fills a cache with each step's sequences and reads the waste from cache.stats(). */
export function measureWaste(workload: string, steps: number[][], pageSize: number): WasteResult {
  using rt = openRuntime({ backend: "cpu" });
  const pagesFor = (lengths: number[]) => lengths.reduce((sum, n) => sum + Math.ceil(n / pageSize), 0);
  using cache = rt.createKVCache({
    numLayers: 1,
    numKvHeads: 1,
    headDim: 64,
    dtype: "f16",
    pageSize,
    numPages: Math.max(...steps.map(pagesFor)),
    maxSequences: Math.max(...steps.map((s) => s.length)),
    maxPagesPerSequence: Math.ceil(Math.max(...steps.flat()) / pageSize),
  });
  const result: WasteResult = { workload, pageSize, steps: [], allocatedSlots: 0, wastedSlots: 0, wasteFraction: 0 };
  for (const lengths of steps) {
    const sequences = lengths.map((n) => {
      const seq = cache.createSequence();
      cache.append(seq, n);
      return seq;
    });
    const stats = cache.stats();
    const allocatedSlots = stats.pagesUsed * pageSize;
    result.steps.push({
      sequences: lengths.length,
      tokens: lengths.reduce((a, b) => a + b, 0),
      allocatedSlots,
      wastedSlots: stats.wastedSlots,
      wasteFraction: stats.wasteFraction,
    });
    result.allocatedSlots += allocatedSlots;
    result.wastedSlots += stats.wastedSlots;
    for (const seq of sequences) cache.release(seq);
  }
  result.wasteFraction = result.wastedSlots / result.allocatedSlots;
  return result;
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      workloads: { type: "string", default: DEFAULT_WORKLOADS },
      workload: { type: "string", default: "b128-serving" },
      "page-size": { type: "string", default: "16" },
      out: { type: "string" },
    },
  });
  const result = measureWaste(
    values.workload!,
    workloadSteps(values.workloads!, values.workload!),
    Number(values["page-size"]),
  );
  for (const [i, s] of result.steps.entries())
    console.log(
      `step ${i}: ${s.sequences} sequences, ${s.tokens} tokens, ${s.wastedSlots} of ${s.allocatedSlots} slots wasted (${(100 * s.wasteFraction).toFixed(3)}%)`,
    );
  console.log(
    `${result.workload}, page size ${result.pageSize}: ${(100 * result.wasteFraction).toFixed(3)}% of allocated slots wasted`,
  );
  if (values.out) {
    mkdirSync(dirname(values.out), { recursive: true });
    writeFileSync(values.out, `${JSON.stringify(result, null, 2)}\n`);
  }
}
