// Calibrates the adaptive policy on this machine's GPU and stores the table where engines load it.
//   bun run calibrate [--heads 32/8] [--head-dim 128] [--page-size 16] [--dtype f16] [--max-tokens N]
//                     [--settings '{"math":"cuda-cores"}']   (engine settings; the table is stored for them)
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

using rt = openRuntime({ backend: "cuda" });
console.log(
  `calibrating the adaptive policy on ${rt.info.name} for ${numQoHeads}/${numKvHeads} heads of ${shape.headDim}, page ${shape.pageSize}, ${shape.dtype}`,
);
const started = performance.now();
const { table, path } = rt.calibrate(shape, {
  maxTokens: values["max-tokens"] ? Number(values["max-tokens"]) : undefined,
  settings,
  onProgress: (done, total, c) => {
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

function pct(x: number): string {
  return `${(100 * x).toFixed(1)}%`;
}
