// The B8 workloads of bench/workloads/decode.json: batches of 8 requests with very uneven contexts.
// For each step: build the 8 contexts, plan, run one layer, and print the kernel the adaptive policy
// chose and the bandwidth it reached. This is what `npm start` runs.
//
//   bun examples/b8-batch.ts                  # full lengths on a GPU; 1/64 of them on the CPU backend
//   PKV_SCALE=16 PKV_REPS=3 bun examples/b8-batch.ts
import workloads from "../bench/workloads/decode.json";
import { encode, openRuntime, readEnv } from "persistentkv";

// CUDA if a device is visible, else the CPU reference backend; PKV_BACKEND=cpu forces the CPU.
using rt = openRuntime({ backend: (readEnv("PKV_BACKEND") ?? "auto") as "auto" });
const gpu = rt.backend === "cuda";
const scale = Number(readEnv("PKV_SCALE") ?? (gpu ? 1 : 64));
const reps = Number(readEnv("PKV_REPS") ?? (gpu ? 20 : 3));
if (gpu) console.log(`${rt.info.name}: full-size workloads, median of ${reps} runs per step`);
else console.log(`no CUDA device visible: running on the CPU reference backend with contexts scaled 1/${scale}`);
// The streaming-read bandwidth of this GPU is the ceiling of decode attention.
const ceiling = gpu ? rt.probeReadBandwidth() : 0;
if (gpu) console.log(`streaming-read ceiling: ${ceiling.toFixed(0)} GB/s`);

const b8 = workloads.workloads.filter((w) => w.name.startsWith("b8-"));
const { num_qo_heads: numQoHeads, num_kv_heads: numKvHeads, head_dim: headDim, page_size: pageSize } = b8[0]!.model;
const scaled = (steps: number[][]) => steps.map((lengths) => lengths.map((n) => Math.max(1, Math.round(n / scale))));
const pagesNeeded = (lengths: number[]) => lengths.reduce((sum, n) => sum + Math.ceil(n / pageSize), 0);
const numPages = Math.max(...b8.flatMap((w) => scaled(w.steps).map(pagesNeeded)));

// One layer: a step's time and bytes are per layer, and every layer of a model repeats them.
using cache = rt.createKVCache({
  numLayers: 1,
  numPages,
  pageSize,
  numKvHeads,
  headDim,
  dtype: "f16",
  maxSequences: 8,
});
using engine = rt.createDecodeEngine({
  numQoHeads,
  numKvHeads,
  headDim,
  pageSize,
  dtype: "f16",
  policy: "adaptive",
  maxBatch: 8,
});

// K and V values do not change the time: fill every context from one random chunk kept on the device.
const chunk = 4096;
const chunkBytes = chunk * numKvHeads * headDim * 2;
using kChunk = rt.allocDevice(chunkBytes);
using vChunk = rt.allocDevice(chunkBytes);
const random = () =>
  encode(
    "f16",
    Float32Array.from({ length: chunkBytes / 2 }, () => Math.random() * 2 - 1),
  );
kChunk.write(random());
vChunk.write(random());

for (const workload of b8) {
  scaled(workload.steps).forEach((lengths, step) => {
    const sequences = lengths.map((length) => {
      const seq = cache.createSequence();
      for (let done = 0; done < length; done += chunk)
        cache.writeKV(0, cache.append(seq, Math.min(chunk, length - done)), kChunk, vChunk);
      return seq;
    });
    const q = encode(
      "f16",
      Float32Array.from({ length: 8 * numQoHeads * headDim }, () => Math.random() * 2 - 1),
    );
    const out = new Uint16Array(q.length);
    const times: number[] = [];
    let plan = engine.plan(cache, sequences);
    for (let rep = 0; rep < reps; rep++) {
      const start = performance.now();
      plan = engine.plan(cache, sequences); // plan + run + (host arrays) sync: what a serving step pays
      engine.run(plan, 0, q, out);
      times.push(performance.now() - start);
    }
    const ms = times.sort((a, b) => a - b)[Math.floor(times.length / 2)]!;
    const gbps = plan.kvBytes / (ms * 1e6);
    const ofCeiling = gpu ? `, ${((100 * gbps) / ceiling).toFixed(0)}% of ceiling` : "";
    console.log(
      `${workload.name} step ${step}: ${plan.totalTokens} tokens, kernel ${plan.kernel}, step ${(ms * 1000).toFixed(0)} us (plan + run + sync), ${gbps.toFixed(1)} GB/s${ofCeiling}`,
    );
    for (const seq of sequences) cache.release(seq);
  });
}
