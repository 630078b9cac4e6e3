// One request with a long context, decoded token by token: the KV cache and decode engine without
// the scheduler. A real model would compute K, V and q from its weights; here they are random
// numbers (the time of attention does not depend on the values).
//
//   bun examples/single-request.ts                 # 32K context on a GPU, 2K on the CPU backend
//   PKV_CONTEXT=8192 PKV_STEPS=8 bun examples/single-request.ts
import { encode, openRuntime, readEnv } from "persistentkv";

// CUDA if a device is visible, else the CPU reference backend; PKV_BACKEND=cpu forces the CPU.
using rt = openRuntime({ backend: (readEnv("PKV_BACKEND") ?? "auto") as "auto" });
const gpu = rt.backend === "cuda";
// Llama-3-8B-like attention on a GPU; a smaller model on the CPU so that it runs in a second.
const numLayers = gpu ? 32 : 2;
const [numQoHeads, numKvHeads, headDim, pageSize] = gpu ? [32, 8, 128, 16] : [8, 2, 64, 16];
const context = Number(readEnv("PKV_CONTEXT") ?? (gpu ? 32768 : 2048));
const steps = Number(readEnv("PKV_STEPS") ?? 16);
console.log(
  `${rt.info.name} (${rt.backend}): ${numLayers} layers, ${numQoHeads}/${numKvHeads} heads of ${headDim}, context ${context}`,
);

using cache = rt.createKVCache({
  numLayers,
  numPages: Math.ceil((context + steps) / pageSize),
  pageSize,
  numKvHeads,
  headDim,
  dtype: "f16",
});
using engine = rt.createDecodeEngine({ numQoHeads, numKvHeads, headDim, pageSize, dtype: "f16", policy: "adaptive" });
const random = (n: number) =>
  encode(
    "f16",
    Float32Array.from({ length: n }, () => Math.random() * 2 - 1),
  );

// Prefill: store the prompt's K and V, in chunks (one chunk of random values, reused).
const seq = cache.createSequence();
const chunk = 1024;
const kChunk = random(chunk * numKvHeads * headDim);
const vChunk = random(chunk * numKvHeads * headDim);
for (let done = 0; done < context; done += chunk) {
  const n = Math.min(chunk, context - done);
  const slots = cache.append(seq, n); // reserves n slots, taking pages as needed
  const size = n * numKvHeads * headDim;
  for (let layer = 0; layer < numLayers; layer++)
    cache.writeKV(layer, slots, kChunk.subarray(0, size), vChunk.subarray(0, size));
}

// Decode: each step appends the new token, stores its K and V in every layer, and attends over all of it.
const q = random(numQoHeads * headDim);
const out = new Uint16Array(q.length);
const k = random(numKvHeads * headDim);
const v = random(numKvHeads * headDim);
for (let step = 0; step < steps; step++) {
  const start = performance.now();
  const slots = cache.append(seq, 1);
  const plan = engine.plan(cache, [seq]); // once per step, shared by every layer
  for (let layer = 0; layer < numLayers; layer++) {
    cache.writeKV(layer, slots, k, v);
    engine.run(plan, layer, q, out); // host arrays: complete on return
  }
  const ms = performance.now() - start;
  const gbps = (plan.kvBytes * numLayers) / (ms * 1e6);
  console.log(
    `step ${step}: context ${seq.length}, kernel ${plan.kernel}, ${ms.toFixed(2)} ms for ${numLayers} layers, ${gbps.toFixed(1)} GB/s`,
  );
}
cache.release(seq);
console.log(`done: ${steps} tokens decoded, pages back in the pool: ${cache.stats().pagesUsed === 0}`);
