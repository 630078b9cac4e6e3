// Host cost of the KV cache's bookkeeping (tinybench): append, fork, release, prefix hits, and the
// per-step page-table update of a 256-sequence decode batch, next to what a CSR page table would cost.
//   bun bench/kvcache.bench.ts [--workloads bench/workloads/decode.json] [--time ms] [--out f.json]
// Runs on the CPU backend: only host work is timed (no K/V is written), so the numbers hold for any GPU.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import { Bench } from "tinybench";
import { type Sequence, openRuntime } from "persistentkv";
import { DEFAULT_WORKLOADS, workloadSteps } from "./waste.ts";

const { values } = parseArgs({
  options: {
    workloads: { type: "string", default: DEFAULT_WORKLOADS },
    time: { type: "string", default: "500" },
    out: { type: "string" },
  },
});

const P = 16;
const GROWTH = 512; // tokens a batch sequence grows before it is reset to its workload length
using rt = openRuntime({ backend: "cpu" });

// Two 256-sequence batches: b256-short as is, and b128-serving's first two steps side by side.
const batches = {
  "b256-short": workloadSteps(values.workloads!, "b256-short")[0]!,
  "b128-serving x2": workloadSteps(values.workloads!, "b128-serving").slice(0, 2).flat(),
};
const pagesFor = (n: number) => Math.ceil(n / P);
const maxTokens = Math.max(...Object.values(batches).flat()) + GROWTH + 4096;
const numPages =
  Object.values(batches)
    .flat()
    .reduce((s, n) => s + pagesFor(n + GROWTH + 1), 0) + 4096;
using cache = rt.createKVCache({
  numLayers: 1,
  numKvHeads: 1,
  headDim: 64,
  dtype: "f16",
  pageSize: P,
  numPages,
  maxSequences: 600,
  maxPagesPerSequence: pagesFor(maxTokens),
});

const bench = new Bench({ time: Number(values.time), warmupTime: 100 });
const out = new Int32Array(maxTokens);
const one = new Int32Array(1);

// A decode sequence appending one token per step; every 16th append starts a page.
{
  let seq = cache.createSequence();
  bench.add("append 1 token (count)", () => {
    if (seq.length >= 4096) {
      cache.release(seq);
      seq = cache.createSequence();
    }
    cache.append(seq, 1, out);
  });
}
{
  let seq = cache.createSequence();
  let token = 0;
  bench.add("append 1 token (id, prefix-cache registration)", () => {
    if (seq.length >= 4096) {
      cache.release(seq);
      seq = cache.createSequence();
    }
    one[0] = token++ & 1023;
    cache.append(seq, one, out);
  });
}
{
  const parent = cache.createSequence();
  cache.append(parent, 2048);
  bench.add("fork + release (2048 tokens, 128 pages)", () => cache.release(cache.fork(parent)));
  bench.add("create + append 2048 + release", () => {
    const seq = cache.createSequence();
    cache.append(seq, 2048, out);
    cache.release(seq);
  });
}
{
  const prompt = Int32Array.from({ length: 2048 }, (_, i) => (i * 7919) % 32000);
  const writer = cache.createSequence();
  cache.append(writer, prompt);
  cache.release(writer); // registers and parks the prompt's 128 pages
  bench.add("createSequence with a 2048-token prefix hit + release", () => {
    const seq = cache.createSequence({ tokens: prompt });
    if (seq.prefixHitTokens !== 2048) throw new Error(`prefix hit ${seq.prefixHitTokens}, expected 2048`);
    cache.release(seq);
  });
}

// The per-step page-table work of a 256-sequence batch: each sequence appends one token (1 in 16 starts a
// page and writes one block-table column), then describeBatch gives the plan rows and lengths.
// The CSR alternative rebuilds indptr and indices from every sequence's page list each step.
const csrNotes: Record<string, { pages: number; csrUploadBytes: number; blockTableUploadBytes: number }> = {};
for (const [name, lengths] of Object.entries(batches)) {
  const seqs: Sequence[] = lengths.map((n) => {
    const seq = cache.createSequence();
    cache.append(seq, n, out);
    return seq;
  });
  const rows = new Int32Array(seqs.length);
  const lens = new Int32Array(seqs.length);
  bench.add(`256-seq step, block table: append 1 each + describeBatch (${name})`, () => {
    for (let i = 0; i < seqs.length; i++) {
      const seq = seqs[i]!;
      if (seq.length >= lengths[i]! + GROWTH) {
        cache.release(seq);
        seqs[i] = cache.createSequence();
        cache.append(seqs[i]!, lengths[i]!, out);
      }
      cache.append(seqs[i]!, 1, out);
    }
    cache.describeBatch(seqs, rows, lens);
  });
  bench.add(`256-seq describeBatch alone (${name})`, () => cache.describeBatch(seqs, rows, lens));
  const lists = seqs.map((seq) => cache.pagesOf(seq));
  const pages = lists.reduce((s, l) => s + l.length, 0);
  const indptr = new Int32Array(seqs.length + 1);
  const indices = new Int32Array(pages + seqs.length);
  bench.add(`256-seq step, CSR rebuild: indptr + indices (${name})`, () => {
    let at = 0;
    for (let i = 0; i < lists.length; i++) {
      indptr[i] = at;
      indices.set(lists[i]!, at);
      at += lists[i]!.length;
    }
    indptr[lists.length] = at;
  });
  // Upload per step: CSR sends every page id; the block table sends the new columns (1 in 16 rows) + lengths.
  csrNotes[name] = {
    pages,
    csrUploadBytes: (pages + seqs.length + 1) * 4,
    blockTableUploadBytes: Math.ceil(seqs.length / P) * 4 + seqs.length * 8,
  };
}

bench.runSync();
console.table(bench.table());
const results = bench.tasks.map((task) => {
  const r = task.result;
  if (r.state !== "completed") throw new Error(`${task.name}: ${r.state}`);
  return {
    task: task.name,
    mean_us: r.latency.mean * 1000,
    p50_us: r.latency.p50 * 1000,
    p99_us: r.latency.p99 * 1000,
    samples: r.latency.samples?.length,
  };
});
for (const r of results)
  console.log(
    `${r.task.padEnd(80)} ${r.mean_us.toFixed(3).padStart(10)} us mean  ${r.p50_us.toFixed(3).padStart(10)} us p50`,
  );
console.log("page-table upload per step:", csrNotes);
if (values.out) {
  mkdirSync(dirname(values.out), { recursive: true });
  writeFileSync(
    values.out,
    `${JSON.stringify({ date: new Date().toISOString(), results, upload: csrNotes }, null, 2)}\n`,
  );
}
