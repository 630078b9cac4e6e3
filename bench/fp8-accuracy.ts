// What FP8 pages cost in accuracy: decode attention on the CPU backend over f16 and FP8 caches holding the
// same K and V, each output's relative L2 error against float64 attention over the unquantized (f16) data.
// Data: uniform random K and V, and keys with outlier channels as real LLM keys have (a few channels 20x
// the rest, plus a per-channel offset). For comparison, one static scale for the whole tensor (the common
// per-tensor scheme), computed here from the same data with the same e4m3 rounding.
//   bun bench/fp8-accuracy.ts [--tokens 4096] [--out bench/results/fp8-accuracy.json]
import { writeFileSync } from "node:fs";
import { decode, decodeE4m3, encode, encodeE4m3, type KVDType, openRuntime } from "persistentkv";
import { rng } from "persistentkv/testing";

const args = process.argv.slice(2);
const arg = (name: string, fallback: string) => (args.includes(name) ? args[args.indexOf(name) + 1]! : fallback);
const tokens = Number(arg("--tokens", "4096"));
const outPath = args.includes("--out") ? arg("--out", "") : undefined;
const [hq, hkv, d, pageSize, batch] = [32, 8, 128, 16, 2]; // the Llama-3-8B-like shape of DESIGN.md
const E = hkv * d;

// Gaussian by Box-Muller from the seeded uniform source.
function gaussian(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

interface DataSet {
  name: string;
  k: Float32Array[]; // per sequence [tokens][hkv][d]
  v: Float32Array[];
  q: Float32Array; // [batch][hq][d]
}

function dataSet(name: string, seed: number, keyAt: (random: () => number, channel: number) => number): DataSet {
  const random = rng(seed);
  const seqs = Array.from({ length: batch }, () => ({
    k: Float32Array.from({ length: tokens * E }, (_, i) => keyAt(random, i % d)),
    v: Float32Array.from({ length: tokens * E }, () => gaussian(random)),
  }));
  // Queries scaled so that softmax is peaked (some tokens matter much more than others), as in real models.
  const q = Float32Array.from({ length: batch * hq * d }, () => 2 * gaussian(random));
  return { name, k: seqs.map((s) => s.k), v: seqs.map((s) => s.v), q };
}

const outliers = new Set([7, 33, 90, 101]); // channels 20x the others, as in LLM keys
const sets = [
  dataSet("random (uniform [-1, 1])", 1, (random) => 2 * random() - 1),
  dataSet(
    "outlier channels (4 of 128 at 20x, per-channel offsets)",
    2,
    (random, c) => (outliers.has(c) ? 20 : 1) * gaussian(random) + (c % 5) * 0.5,
  ),
];

// Float64 attention of one sequence over [tokens][hkv][d] arrays.
function attention(q: Float64Array, k: Float64Array, v: Float64Array, b: number): Float64Array {
  const out = new Float64Array(hq * d);
  const scores = new Float64Array(tokens);
  for (let h = 0; h < hq; h++) {
    const kv = Math.floor(h / (hq / hkv)),
      qo = (b * hq + h) * d;
    let max = -Infinity;
    for (let t = 0; t < tokens; t++) {
      let dot = 0;
      for (let i = 0; i < d; i++) dot += q[qo + i]! * k[(t * hkv + kv) * d + i]!;
      scores[t] = dot / Math.sqrt(d);
      max = Math.max(max, scores[t]!);
    }
    let sum = 0;
    for (let t = 0; t < tokens; t++) sum += scores[t] = Math.exp(scores[t]! - max);
    for (let t = 0; t < tokens; t++)
      for (let i = 0; i < d; i++) out[h * d + i] = out[h * d + i]! + (scores[t]! / sum) * v[(t * hkv + kv) * d + i]!;
  }
  return out;
}

const relL2 = (got: ArrayLike<number>, want: ArrayLike<number>) => {
  let diff = 0,
    norm = 0;
  for (let i = 0; i < want.length; i++) {
    diff += (got[i]! - want[i]!) ** 2;
    norm += want[i]! ** 2;
  }
  return Math.sqrt(diff / norm);
};

// One static scale for the whole tensor (amax / 448): codes and the values they stand for.
function perTensor(x: Float64Array): Float64Array {
  let amax = 0;
  for (const value of x) amax = Math.max(amax, Math.abs(value));
  const scale = amax / 448;
  const back = decodeE4m3(encodeE4m3(x.map((value) => value / scale)));
  return Float64Array.from(back, (c) => c * scale);
}

using rt = openRuntime({ backend: "cpu" });
const rows: { data: string; scheme: string; rel_l2: number }[] = [];
for (const set of sets) {
  // What every scheme starts from: the f16 values a model would write.
  const k16 = set.k.map((k) => encode("f16", k)),
    v16 = set.v.map((v) => encode("f16", v)),
    q16 = encode("f16", set.q);
  const wide = (xs: Uint16Array[]) => xs.map((x) => Float64Array.from(decode("f16", x)));
  const [k64, v64] = [wide(k16), wide(v16)];
  const q64 = Float64Array.from(decode("f16", q16));
  const want = Array.from({ length: batch }, (_, b) => attention(q64, k64[b]!, v64[b]!, b));
  const wantAll = Float64Array.from(want.flatMap((w) => Array.from(w)));

  for (const dtype of ["f16", "fp8_e4m3"] as KVDType[]) {
    using cache = rt.createKVCache({
      numLayers: 1,
      numPages: batch * Math.ceil(tokens / pageSize),
      pageSize,
      numKvHeads: hkv,
      headDim: d,
      dtype,
    });
    using engine = rt.createDecodeEngine({ cache, numQoHeads: hq, maxBatch: batch });
    const seqs = k16.map((k, b) => {
      const seq = cache.createSequence();
      cache.writeKV(0, cache.append(seq, tokens), k, v16[b]!);
      return seq;
    });
    const out = new Uint16Array(batch * hq * d);
    engine.run(engine.plan(cache, seqs), 0, q16, out);
    const scheme = dtype === "f16" ? "f16 pages (output rounding only)" : "FP8 pages, a scale per (token, KV head)";
    rows.push({ data: set.name, scheme, rel_l2: relL2(decode("f16", out), wantAll) });
  }
  const got = Array.from({ length: batch }, (_, b) => attention(q64, perTensor(k64[b]!), perTensor(v64[b]!), b));
  rows.push({
    data: set.name,
    scheme: "FP8, one scale per tensor (for comparison)",
    rel_l2: relL2(Float64Array.from(got.flatMap((g) => Array.from(g))), wantAll),
  });
}

console.log(
  `Attention output error against float64 over the unquantized data: ${batch} x ${tokens} tokens, Hq ${hq}, Hkv ${hkv}, d ${d}\n`,
);
console.log("| data | KV storage | relative L2 error |\n|---|---|---|");
for (const r of rows) console.log(`| ${r.data} | ${r.scheme} | ${r.rel_l2.toExponential(2)} |`);
if (outPath)
  writeFileSync(outPath, JSON.stringify({ date: new Date().toISOString(), tokens, hq, hkv, d, rows }, null, 1));
