// FP8 KV storage as the tests model it: the quantization rule of persistentkv.h ("FP8 KV storage") in
// TypeScript (fp32 steps through Math.fround, which rounds a double result of one operation on floats
// exactly as fp32 arithmetic would), and an e4m3 rounding derived from the format's definition: the
// nearest of the 256 codes' values, ties to the even code, saturating at +-448, NaN to 0x7F.
import { type DType, decode, decodeE4m3, encode } from "../../lib/dtype.ts";
import { native } from "../../lib/ffi/loader.ts";

const ALL_CODES = decodeE4m3(Uint8Array.from({ length: 256 }, (_, i) => i));
// The finite non-negative codes in increasing order of value (0x00..0x7E).
const POSITIVE = Array.from({ length: 0x7f }, (_, c) => c);

/** e4m3 code of x by nearest-value search (independent of the bit manipulation in half.h). */
export function nearestE4m3(x: number): number {
  if (Number.isNaN(x)) return 0x7f;
  const sign = x < 0 || Object.is(x, -0) ? 0x80 : 0;
  const a = Math.abs(x);
  if (a >= 448) return sign | 0x7e;
  let best = 0;
  for (const c of POSITIVE) {
    const d = Math.abs(ALL_CODES[c]! - a),
      bestD = Math.abs(ALL_CODES[best]! - a);
    if (d < bestD || (d === bestD && (c & 1) === 0 && (best & 1) === 1)) best = c;
  }
  return sign | best;
}

/** The library's host e4m3 encoder (pkv_fp8_e4m3_encode), which the tests check against nearestE4m3. */
export function encodeE4m3(values: Float32Array): Uint8Array {
  const out = new Uint8Array(values.length);
  if (values.length > 0 && native().pkv_fp8_e4m3_encode(values.length, values, out) !== 0)
    throw new Error("pkv_fp8_e4m3_encode failed");
  return out;
}

/**
 * Codes and scale of one (token, head) row of 16-bit values, as the pool stores them; `round` turns the
 * scaled values into codes (nearestE4m3 by default: slow, for small checks).
 */
export function quantizeRow(
  values: Float32Array,
  round: (scaled: Float32Array) => Uint8Array = (scaled) => Uint8Array.from(scaled, nearestE4m3),
): { codes: Uint8Array; scale: number } {
  let amax = 0;
  for (const x of values) if (Math.abs(x) > amax) amax = Math.abs(x);
  const factor = amax > 0 ? Math.fround(448 / amax) : 0;
  const scaled = values.map((x) => Math.fround(x * factor));
  return { codes: round(scaled), scale: amax > 0 ? Math.fround(amax / 448) : 0 };
}

/** What an FP8 cache reads back for rows of `headDim` values: code * scale, rounded to the value type. */
export function fp8RoundTrip(dtype: DType, data: Uint16Array, headDim: number): Uint16Array {
  const values = decode(dtype, data);
  const out = new Float32Array(values.length);
  for (let at = 0; at < values.length; at += headDim) {
    const { codes, scale } = quantizeRow(values.subarray(at, at + headDim), encodeE4m3);
    const back = decodeE4m3(codes);
    for (let i = 0; i < headDim; i++) out[at + i] = Math.fround(back[i]! * scale);
  }
  return encode(dtype, out);
}
