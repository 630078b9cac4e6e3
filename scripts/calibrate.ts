// Calibrates the adaptive policy on this machine's GPU and stores the table where engines load it.
//   bun run calibrate [--heads 32/8] [--head-dim 128] [--page-size 16] [--dtype f16] [--max-tokens N]
import { parseArgs } from "node:util";
import { type DType, openRuntime } from "persistentkv";

const { values } = parseArgs({
  options: {
    heads: { type: "string", default: "32/8" },
    "head-dim": { type: "string", default: "128" },
    "page-size": { type: "string", default: "16" },
    dtype: { type: "string", default: "f16" },
    "max-tokens": { type: "string" },
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

using rt = openRuntime({ backend: "cuda" });
console.log(
  `calibrating the adaptive policy on ${rt.info.name} for ${numQoHeads}/${numKvHeads} heads of ${shape.headDim}, page ${shape.pageSize}, ${shape.dtype}`,
);
const started = performance.now();
const { table, path } = rt.calibrate(shape, {
  maxTokens: values["max-tokens"] ? Number(values["max-tokens"]) : undefined,
  onProgress: (done, total, c) =>
    console.log(
      `[${done}/${total}] batch ${c.batch}, ${c.tokens} tokens: baseline ${c.baselineUs.toFixed(1)} us, persistent ${c.persistentUs.toFixed(1)} us -> ${c.choice}`,
    ),
});
const chosen = table.measurements.filter((c) => c.choice !== "none").length;
console.log(
  `${chosen} of ${table.measurements.length} cells have a clear winner; ${((performance.now() - started) / 1000).toFixed(1)} s; saved ${path}`,
);
