// Swap bandwidth: swapOut and swapIn of whole sequences between GPU pages and the pool's pinned swap
// space, timed as the scheduler sees it (host bookkeeping + copies + synchronize), median of repeats.
//   bun bench/swap.ts [--gib 1] [--repeats 5] [--out bench/results/swap.json]
// Shape: Llama-3-8B-like (32 layers, 8 KV heads, head dim 128, fp16, page size 16): 2 MiB per page.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import { commit } from "./meta.ts";
import { type Sequence, openRuntime } from "persistentkv";

const { values } = parseArgs({
  options: {
    gib: { type: "string", default: "1" },
    repeats: { type: "string", default: "5" },
    sequences: { type: "string", default: "8" },
    out: { type: "string" },
  },
});

const shape = { numLayers: 32, numKvHeads: 8, headDim: 128, pageSize: 16, dtype: "f16" as const };
const tokenBytes = shape.numLayers * 2 * shape.numKvHeads * shape.headDim * 2; // every layer, K and V
const pageBytes = tokenBytes * shape.pageSize;
const pages = Math.round((Number(values.gib) * 2 ** 30) / pageBytes);
const sequences = Number(values.sequences);
const pagesPerSeq = Math.ceil(pages / sequences);
const repeats = Number(values.repeats);

using rt = openRuntime({ backend: "auto" });
if (rt.backend === "cpu") console.warn("note: no CUDA device is visible; this measures host memcpy");
using cache = rt.createKVCache({ ...shape, numPages: pagesPerSeq * sequences, swapPages: pagesPerSeq * sequences });
const E = shape.numKvHeads * shape.headDim;

// Every sequence gets full pages; layer 0 and the last layer get a known pattern to check after the trip.
const seqs: Sequence[] = [];
const patterns: Uint16Array[] = [];
for (let s = 0; s < sequences; s++) {
  const seq = cache.createSequence();
  const slots = cache.append(seq, pagesPerSeq * shape.pageSize);
  const pattern = Uint16Array.from({ length: slots.length * E }, (_, i) => (i * 2654435761 + s) & 0x3bff);
  for (const layer of [0, shape.numLayers - 1]) cache.writeKV(layer, slots, pattern, pattern);
  seqs.push(seq);
  patterns.push(pattern);
}
const bytes = pagesPerSeq * sequences * pageBytes;
rt.synchronize();

function timed(run: () => void): number {
  const start = performance.now();
  run();
  rt.synchronize();
  return (performance.now() - start) / 1000;
}
const outTimes: number[] = [];
const inTimes: number[] = [];
for (let r = 0; r < repeats; r++) {
  outTimes.push(timed(() => seqs.forEach((seq) => cache.swapOut(seq))));
  inTimes.push(timed(() => seqs.forEach((seq) => cache.swapIn(seq))));
}
seqs.forEach((seq, s) => {
  for (const layer of [0, shape.numLayers - 1]) {
    const { k, v } = cache.readKV(layer, seq);
    if (
      !Buffer.from(k.buffer).equals(Buffer.from(patterns[s]!.buffer)) ||
      !Buffer.from(v.buffer).equals(Buffer.from(patterns[s]!.buffer))
    )
      throw new Error(`sequence ${s}, layer ${layer}: K/V changed across ${repeats} swap round trips`);
  }
});

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const result = {
  device: rt.info.name,
  commit: commit(),
  date: new Date().toISOString(),
  timing: `wall time of swapOut/swapIn of ${sequences} sequences + runtime synchronize, median of ${repeats}`,
  shape,
  pages: pagesPerSeq * sequences,
  bytes,
  swap_out_s: median(outTimes),
  swap_in_s: median(inTimes),
  swap_out_gbps: bytes / median(outTimes) / 1e9,
  swap_in_gbps: bytes / median(inTimes) / 1e9,
  verified: "layers 0 and last byte-identical after every round trip",
};
console.log(
  `${result.device}: ${(bytes / 2 ** 30).toFixed(2)} GiB in ${result.pages} pages; ` +
    `swap-out ${result.swap_out_gbps.toFixed(1)} GB/s, swap-in ${result.swap_in_gbps.toFixed(1)} GB/s (median of ${repeats})`,
);
if (values.out) {
  mkdirSync(dirname(values.out), { recursive: true });
  writeFileSync(values.out, `${JSON.stringify(result, null, 2)}\n`);
}
