// Twins for the sharded tests: a cache and engine sharded over N devices, and the same cache and engine on
// one device, fed the same operations and data, so every result of the sharded pair can be compared with
// the one-device pair (bit for bit where the math is the same) and with the CPU reference.
import {
  type Backend,
  type DType,
  type DecodeEngine,
  type KVCache,
  openRuntime,
  referenceDecode,
  type Runtime,
  type Sequence,
  ShardedDecodeEngine,
  ShardedKVCache,
  type ShardedRuntime,
  createShardedRuntime,
  decode,
} from "../../lib/index.ts";
import type { ShardConfigOf } from "../../lib/sharded/pools.ts";
import { randomHalves } from "../../lib/testing/index.ts";

export interface TwinShape {
  numLayers: number;
  numPages: number;
  pageSize: number;
  numKvHeads: number;
  numQoHeads: number;
  headDim: number;
  dtype: DType;
  swapPages?: number;
  maxBatch?: number;
}

export class Twin implements Disposable {
  readonly srt: ShardedRuntime;
  readonly cache: ShardedKVCache;
  readonly engine: ShardedDecodeEngine;
  readonly rt: Runtime;
  readonly one: KVCache;
  readonly oneEngine: DecodeEngine;
  readonly seqs: Sequence[] = [];
  readonly seqs1: Sequence[] = [];

  /** `devices`: a count, or a sharded runtime made otherwise (e.g. two runtimes of one GPU). */
  constructor(
    readonly backend: Backend,
    devices: number | ShardedRuntime,
    readonly shape: TwinShape,
    configOf?: ShardConfigOf,
  ) {
    const { numQoHeads, maxBatch, ...cacheShape } = shape;
    this.srt = typeof devices === "number" ? createShardedRuntime({ backend, devices }) : devices;
    this.cache = new ShardedKVCache(this.srt, cacheShape, configOf);
    this.engine = new ShardedDecodeEngine(this.srt, { numQoHeads, maxBatch, cache: this.cache });
    this.rt = openRuntime({ backend });
    this.one = this.rt.createKVCache(cacheShape);
    this.oneEngine = this.rt.createDecodeEngine({ numQoHeads, maxBatch, cache: this.one });
  }

  get tokenElems(): number {
    return this.shape.numKvHeads * this.shape.headDim;
  }

  /** A new sequence of `n` tokens in both caches, with the same random K and V in every layer. */
  add(n: number, random: () => number, tokens?: Int32Array): number {
    const seq = this.cache.createSequence(tokens ? { tokens } : undefined);
    const seq1 = this.one.createSequence(tokens ? { tokens } : undefined);
    this.seqs.push(seq);
    this.seqs1.push(seq1);
    const fresh = n - seq.prefixHitTokens;
    this.grow(this.seqs.length - 1, fresh, random, tokens?.subarray(seq.prefixHitTokens));
    return this.seqs.length - 1;
  }

  /** Appends `n` tokens to sequence i in both caches and writes the same random K and V. */
  grow(i: number, n: number, random: () => number, tokens?: Int32Array): void {
    const slots = this.cache.append(this.seqs[i]!, tokens ?? n);
    const slots1 = this.one.append(this.seqs1[i]!, tokens ?? n);
    for (let layer = 0; layer < this.shape.numLayers; layer++) {
      const k = randomHalves(this.shape.dtype, n * this.tokenElems, random);
      const v = randomHalves(this.shape.dtype, n * this.tokenElems, random);
      this.cache.writeKV(layer, slots, k, v);
      this.one.writeKV(layer, slots1, k, v);
    }
  }

  /** One layer's step over sequences `which` on both stacks, with the same random q. */
  step(which: number[], layer: number, random: () => number) {
    const { numQoHeads, headDim, dtype } = this.shape;
    const plan = this.engine.plan(
      this.cache,
      which.map((i) => this.seqs[i]!),
    );
    const plan1 = this.oneEngine.plan(
      this.one,
      which.map((i) => this.seqs1[i]!),
    );
    const q = randomHalves(dtype, which.length * numQoHeads * headDim, random);
    const out = new Uint16Array(q.length).fill(0x7fff);
    const out1 = new Uint16Array(q.length).fill(0x7fff);
    this.engine.run(plan, layer, q, out);
    this.oneEngine.run(plan1, layer, q, out1);
    return { plan, plan1, q, out, out1, reference: this.reference(which, layer, q) };
  }

  /** The CPU reference over the one-device cache's K and V of those sequences (read back, laid in fresh pages). */
  reference(which: number[], layer: number, q: Uint16Array): Uint16Array {
    const { pageSize: P, numKvHeads: H, headDim: d, numQoHeads, dtype } = this.shape;
    const lens = Int32Array.from(which, (i) => this.seqs1[i]!.length);
    const pagesOf = Array.from(lens, (n) => Math.ceil(n / P));
    const numPages = pagesOf.reduce((a, b) => a + b, 0);
    const kPages = new Uint16Array(numPages * H * P * d);
    const vPages = new Uint16Array(kPages.length);
    const pageIndptr = new Int32Array(which.length + 1);
    which.forEach((i, b) => {
      pageIndptr[b + 1] = pageIndptr[b]! + pagesOf[b]!;
      const { k, v } = this.one.readKV(layer, this.seqs1[i]!);
      for (let t = 0; t < lens[b]!; t++)
        for (let h = 0; h < H; h++) {
          const at = (((pageIndptr[b]! + Math.floor(t / P)) * H + h) * P + (t % P)) * d;
          kPages.set(k.subarray((t * H + h) * d, (t * H + h + 1) * d), at);
          vPages.set(v.subarray((t * H + h) * d, (t * H + h + 1) * d), at);
        }
    });
    const out = new Uint16Array(q.length);
    referenceDecode({
      shape: { numQoHeads, numKvHeads: H, headDim: d, pageSize: P, dtype },
      pageIndptr,
      pageIndices: Int32Array.from({ length: numPages }, (_, p) => p),
      seqLens: lens,
      kPages,
      vPages,
      numPages,
      q,
      out,
    });
    return out;
  }

  dispose(): void {
    this.rt.dispose();
    this.srt.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** ||a - b|| / ||b|| over 16-bit values of `dtype`. */
export function relativeError(dtype: DType, a: Uint16Array, b: Uint16Array): number {
  const x = decode(dtype, a),
    y = decode(dtype, b);
  let num = 0,
    den = 0;
  for (let i = 0; i < x.length; i++) {
    num += (x[i]! - y[i]!) ** 2;
    den += y[i]! ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

/** Number of positions where two 16-bit arrays differ. */
export function differing(a: Uint16Array, b: Uint16Array): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n;
}
