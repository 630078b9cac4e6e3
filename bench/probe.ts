// Streaming-read bandwidth of the device (16-byte loads): the ceiling every decode benchmark quotes.
//   bun bench/probe.ts [--bytes N] [--iterations N] [--out bench/results/probe.json]
// Prints the result and, with --out, writes {device, commit, date, bytes, iterations, gbps} there.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import { openRuntime } from "persistentkv";
import { commit } from "./meta.ts";

const { values } = parseArgs({
  options: {
    bytes: { type: "string", default: String(2 ** 31) }, // 2 GiB: far beyond any L2, as in the peer runs
    iterations: { type: "string", default: "20" },
    out: { type: "string" },
  },
});

using rt = openRuntime({ backend: "auto" });
if (rt.backend === "cpu") console.warn("note: no CUDA device is visible; this measures host memory");
const bytes = Number(values.bytes);
const iterations = Number(values.iterations);
const gbps = rt.probeReadBandwidth({ bytes, iterations });
const result = { device: rt.info.name, commit: commit(), date: new Date().toISOString(), bytes, iterations, gbps };
console.log(`${result.device}: ${gbps.toFixed(1)} GB/s streaming read (${bytes} bytes, median of ${iterations})`);
if (values.out) {
  mkdirSync(dirname(values.out), { recursive: true });
  writeFileSync(values.out, `${JSON.stringify(result, null, 2)}\n`);
}
