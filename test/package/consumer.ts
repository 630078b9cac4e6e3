// A dependent's first program, run from a scratch project that installed the packed tarballs (see
// test/package.test.ts and scripts/package-smoke.sh): open a runtime, store one sequence's K and V, plan and
// run one decode step, and compare it with referenceDecode. Prints one JSON line; exits 1 on a mismatch.
//
//   bun consumer.ts [cpu|cuda|auto]
import {
  type AttentionShape,
  type Backend,
  decode,
  encode,
  libraryPath,
  openRuntime,
  referenceDecode,
  VERSION,
} from "persistentkv";

const requested = process.argv[2] ?? "cpu";
if (requested !== "cpu" && requested !== "cuda" && requested !== "auto")
  throw new Error(`unknown backend ${requested}`);
const backend: Backend | "auto" = requested;

const shape: AttentionShape = { numQoHeads: 8, numKvHeads: 2, headDim: 64, pageSize: 16, dtype: "f16" };
const { numQoHeads, numKvHeads, headDim, pageSize, dtype } = shape;
const tokens = 100; // six full pages and a partial one
const numPages = Math.ceil(tokens / pageSize);

let seed = 12345;
function random(n: number): Uint16Array {
  const values = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    values[i] = (seed / 2 ** 31) * 2 - 1;
  }
  return encode(dtype, values);
}

using rt = openRuntime({ backend });
using cache = rt.createKVCache({ numLayers: 1, numPages, pageSize, numKvHeads, headDim, dtype });
using engine = rt.createDecodeEngine({ numQoHeads, numKvHeads, headDim, pageSize, dtype });
const k = random(tokens * numKvHeads * headDim); // [token][kv head][d]
const v = random(tokens * numKvHeads * headDim);
const q = random(numQoHeads * headDim);
const seq = cache.createSequence();
cache.writeKV(0, cache.append(seq, tokens), k, v);
const plan = engine.plan(cache, [seq]);
const out = new Uint16Array(q.length);
engine.run(plan, 0, q, out);

// The same context laid out as the reference reads it: pages in order, [page][kv head][slot][d].
const kPages = new Uint16Array(numPages * numKvHeads * pageSize * headDim);
const vPages = new Uint16Array(kPages.length);
for (let t = 0; t < tokens; t++)
  for (let h = 0; h < numKvHeads; h++) {
    const from = (t * numKvHeads + h) * headDim;
    const page = Math.floor(t / pageSize);
    const to = ((page * numKvHeads + h) * pageSize + (t % pageSize)) * headDim;
    kPages.set(k.subarray(from, from + headDim), to);
    vPages.set(v.subarray(from, from + headDim), to);
  }
const expected = new Uint16Array(q.length);
referenceDecode({
  shape,
  pageIndptr: Int32Array.of(0, numPages),
  pageIndices: Int32Array.from({ length: numPages }, (_, i) => i),
  seqLens: Int32Array.of(tokens),
  kPages,
  vPages,
  numPages,
  q,
  out: expected,
});

const got = decode(dtype, out);
const want = decode(dtype, expected);
let maxError = 0;
for (let i = 0; i < want.length; i++) maxError = Math.max(maxError, Math.abs((got[i] ?? Number.NaN) - (want[i] ?? 0)));
const ok = maxError <= 2e-3;
console.log(
  JSON.stringify({
    ok,
    version: VERSION,
    backend: rt.backend,
    device: rt.info.name,
    kernel: plan.kernel,
    library: libraryPath(),
    maxError,
  }),
);
if (!ok) process.exit(1);
