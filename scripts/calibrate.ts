// Calibrates the adaptive policy on this machine's GPU and stores the table where engines load it.
//   bun run calibrate [--heads 32/8] [--head-dim 128] [--page-size 16] [--dtype f16] [--max-tokens N]
//                     [--settings '{"math":"cuda-cores"}']   (engine settings; the table is stored for them)
//                     [--repeat N]   (calibrates N times and reports the cells whose choice changed: it must hold)
import { parseArgs } from "node:util";
import { type CalibrateOptions, type DType, openRuntime } from "persistentkv";

type EngineSettings = NonNullable<CalibrateOptions["settings"]>;

const { values } = parseArgs({
  options: {
    heads: { type: "string", default: "32/8" },
    "head-dim": { type: "string", default: "128" },
    "page-size": { type: "string", default: "16" },
    dtype: { type: "string", default: "f16" },
    "max-tokens": { type: "string" },
    settings: { type: "string", default: "{}" },
    repeat: { type: "string", default: "1" },
    quiet: { type: "boolean", default: false },
  },
});
const heads = values.heads.match(/^(\d+)\/(\d+)$/);
if (!heads) {
  console.error(`--heads ${values.heads}: expected query heads / KV heads, e.g. 32/8`);
  process.exit(2);
}
const [numQoHeads, numKvHeads] = [Number(heads[1]), Number(heads[2])];
const shape = {
  numQoHeads,
  numKvHeads,
  headDim: Number(values["head-dim"]),
  pageSize: Number(values["page-size"]),
  dtype: values.dtype as DType,
};

let settings: EngineSettings;
try {
  settings = JSON.parse(values.settings) as EngineSettings;
} catch {
  console.error(`--settings ${values.settings}: expected a JSON object of engine settings`);
  process.exit(2);
}

const repeat = Number(values.repeat);
if (!Number.isInteger(repeat) || repeat < 1) {
  console.error(`--repeat ${values.repeat}: expected a count of runs, 1 or more`);
  process.exit(2);
}

using rt = openRuntime({ backend: "cuda" });
console.log(
  `calibrating the adaptive policy on ${rt.info.name} for ${numQoHeads}/${numKvHeads} heads of ${shape.headDim}, page ${shape.pageSize}, ${shape.dtype}`,
);
const runs: Map<string, string>[] = []; // per run: "batch B, T tokens" -> the cell's choice
for (let run = 1; run <= repeat; run++) {
  const started = performance.now();
  const { table, path } = rt.calibrate(shape, {
    maxTokens: values["max-tokens"] ? Number(values["max-tokens"]) : undefined,
    settings,
    onProgress: (done, total, c) => {
      if (values.quiet) return;
      const steps = c.steps.map(
        (s) =>
          `${s.kind}: baseline ${s.baselineUs.toFixed(1)} us, persistent ${s.persistentUs.toFixed(1)} us, gain ${pct(s.gain)} spread ${pct(s.spread)} -> ${s.choice}`,
      );
      console.log(`[${done}/${total}] batch ${c.batch}, ${c.tokens} tokens: ${steps.join("; ")} => ${c.choice}`);
    },
  });
  const chosen = table.measurements.filter((c) => c.choice !== "none").length;
  console.log(
    `${chosen} of ${table.measurements.length} cells have a clear winner; ${((performance.now() - started) / 1000).toFixed(1)} s; saved ${path}`,
  );
  runs.push(new Map(table.measurements.map((c) => [`batch ${c.batch}, ${c.tokens} tokens`, c.choice])));
}
if (repeat > 1) {
  // A cell that swaps kernels between runs is a choice made from noise; one that moves to or from "none"
  // sits at the rule's edge, where either verdict costs under the margin plus the cell's spread.
  const changed = [...runs[0]!.keys()].flatMap((cell) => {
    const seen = new Set(runs.map((r) => r.get(cell)));
    return seen.size > 1 ? [{ cell, seen: [...seen], flipped: seen.has("baseline") && seen.has("persistent") }] : [];
  });
  for (const { cell, seen, flipped } of changed)
    console.log(`${cell}: ${seen.join(" / ")}${flipped ? "  FLIPPED" : ""}`);
  const flips = changed.filter((c) => c.flipped).length;
  console.log(`over ${repeat} runs: ${flips} cells flipped kernels, ${changed.length - flips} moved to or from none`);
  if (flips > 0) process.exitCode = 1;
}

function pct(x: number): string {
  return `${(100 * x).toFixed(1)}%`;
}
