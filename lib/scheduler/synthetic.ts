// A stand-in for the model, for examples, tests and benchmarks: deterministic activations, no weights.
//
// - K and V of a context token are a function of (token id, position, layer): two requests with the
//   same prompt prefix produce the same K/V, which is what makes prefix-cache sharing correct.
//   A prompt given only by length has unknown ids (-1); its tokens are keyed by request id instead.
// - q of a step is a function of (request id, position, layer).
// - The generated token is a function of (request id, position) only, never of the attention output,
//   so a preempted and resumed request generates the same tokens and K/V as an unpreempted run.
import { type DType, encode } from "../dtype";
import type { ActiveRequest } from "./request";
import type { StepModel } from "./ports";

export interface SyntheticShape {
  numLayers: number;
  numQoHeads: number;
  numKvHeads: number;
  headDim: number;
  dtype: DType;
  vocab?: number;
}

const TABLE = 1 << 16; // random 16-bit values; rows are read at hashed offsets (fast, and varied enough)
/** Entries of the table every activation is read from (PKV_SYNTHETIC_TABLE_ENTRIES in the C header). */
export const SYNTHETIC_TABLE_ENTRIES = TABLE;

/** 32-bit mix (murmur3 finaliser) of a few integers. */
export function mix(...values: number[]): number {
  let h = 0x9e3779b9;
  for (const value of values) {
    h = Math.imul(h ^ (value | 0), 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
  }
  return h >>> 0;
}

export class SyntheticModel implements StepModel {
  readonly shape: Required<SyntheticShape>;
  readonly #table: Uint16Array;

  constructor(shape: SyntheticShape) {
    this.shape = { vocab: 32000, ...shape };
    const values = new Float32Array(TABLE);
    for (let i = 0; i < TABLE; i++) values[i] = (mix(i, 7) / 0xffffffff) * 2 - 1; // uniform in [-1, 1]
    this.#table = encode(this.shape.dtype, values);
  }

  /** A copy of the table (dtype bits) every activation is read from: what a device model uploads once. */
  table(): Uint16Array {
    return this.#table.slice();
  }

  /** The token id a request generates at a position. */
  token(requestId: number, position: number): number {
    return mix(requestId, position, 3) % this.shape.vocab;
  }

  /** K (which 0) or V (which 1) of one context token in one layer: [Hkv][d] written at out[offset]. */
  kv(request: ActiveRequest, position: number, layer: number, which: 0 | 1, out: Uint16Array, offset: number): void {
    const token = request.tokens[position]!;
    const key = token >= 0 ? mix(token, position, layer, which) : mix(0x40000000 + request.id, position, layer, which);
    this.#fill(key, out, offset, this.shape.numKvHeads * this.shape.headDim);
  }

  prefill(request: ActiveRequest, layer: number, from: number, to: number, k: Uint16Array, v: Uint16Array): void {
    const row = this.shape.numKvHeads * this.shape.headDim;
    for (let p = from; p < to; p++) {
      this.kv(request, p, layer, 0, k, (p - from) * row);
      this.kv(request, p, layer, 1, v, (p - from) * row);
    }
  }

  forward(
    batch: readonly ActiveRequest[],
    layer: number,
    _previous: Uint16Array | null,
    q: Uint16Array,
    k: Uint16Array,
    v: Uint16Array,
  ): void {
    const kvRow = this.shape.numKvHeads * this.shape.headDim;
    const qRow = this.shape.numQoHeads * this.shape.headDim;
    batch.forEach((request, i) => {
      const position = request.contextLength;
      this.#fill(mix(request.id, position, layer, 2), q, i * qRow, qRow);
      this.kv(request, position, layer, 0, k, i * kvRow);
      this.kv(request, position, layer, 1, v, i * kvRow);
    });
  }

  sample(batch: readonly ActiveRequest[], _out: Uint16Array): number[] {
    return batch.map((request) => this.token(request.id, request.contextLength));
  }

  #fill(key: number, out: Uint16Array, offset: number, n: number): void {
    const start = key & (TABLE - 1);
    const first = Math.min(n, TABLE - start);
    out.set(this.#table.subarray(start, start + first), offset);
    if (first < n) out.set(this.#table.subarray(0, n - first), offset + first);
  }
}
