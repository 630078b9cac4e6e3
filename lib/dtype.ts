// The 16-bit types of K, V, q and out, as bits in Uint16Arrays, and conversions to fp32; and the KV storage
// types, which add FP8 pages (e4m3 codes with a scale per token and KV head) holding 16-bit values.
import { InvalidArgumentError, Status } from "./errors";

export type DType = "f16" | "bf16";
/** How a KV cache stores K and V: 16-bit values, or FP8 e4m3 codes and scales (values in and out stay 16-bit). */
export type KVDType = DType | "fp8_e4m3";
// Null prototype: "toString" or "constructor" must not find Object.prototype's members.
export const DTYPE_CODE: Readonly<Record<DType, number>> = Object.freeze(
  Object.assign(Object.create(null), { f16: 0, bf16: 1 }),
);
export const DTYPE_BYTES = 2;

export function dtypeCode(dtype: string): number {
  const code = typeof dtype === "string" ? DTYPE_CODE[dtype as DType] : undefined;
  if (code === undefined)
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `dtype "${dtype}" is not "f16" or "bf16"`);
  return code;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** fp32 values to 16-bit storage bits, rounding to nearest even. */
export function encode(dtype: DType, values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  if (dtype === "f16") {
    out.set(new Uint16Array(Float16Array.from(values).buffer));
    return out;
  }
  for (let i = 0; i < values.length; i++) {
    f32[0] = values[i]!;
    const x = u32[0]!;
    out[i] = (x & 0x7fffffff) > 0x7f800000 ? (x >>> 16) | 0x40 : (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return out;
}

/** 16-bit storage bits to fp32 values. */
export function decode(dtype: DType, bits: Uint16Array): Float32Array {
  if (dtype === "f16") return Float32Array.from(new Float16Array(bits.buffer, bits.byteOffset, bits.length));
  const out = new Float32Array(bits.length);
  const words = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) words[i] = bits[i]! << 16;
  return out;
}

// pkv_kv_config.dtype and pkv_decode_config.dtype: an FP8 code also names its 16-bit value type.
const FP8_CODE: Readonly<Record<DType, number>> = Object.freeze(
  Object.assign(Object.create(null), { f16: 2, bf16: 3 }),
);

/** The 16-bit type of the values a cache of `dtype` takes and returns, and of q and out. */
export function valueDtype(dtype: KVDType, queryDtype?: DType): DType {
  return dtype === "fp8_e4m3" ? (queryDtype ?? "f16") : dtype;
}

/**
 * The native dtype code of KV storage `dtype` with queries (and K/V values) of `queryDtype`. For 16-bit
 * storage the query type is the storage type: a different one is an error.
 */
export function kvDtypeCode(dtype: string, queryDtype?: string): number {
  if (queryDtype !== undefined) dtypeCode(queryDtype);
  if (dtype === "fp8_e4m3") return FP8_CODE[(queryDtype ?? "f16") as DType]!;
  if (typeof dtype !== "string" || DTYPE_CODE[dtype as DType] === undefined)
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `dtype "${dtype}" is not "f16", "bf16" or "fp8_e4m3"`);
  if (queryDtype !== undefined && queryDtype !== dtype)
    throw new InvalidArgumentError(
      Status.INVALID_ARGUMENT,
      `queryDtype "${queryDtype}" differs from dtype "${dtype}": only FP8 storage ("fp8_e4m3") takes another query type`,
    );
  return DTYPE_CODE[dtype as DType]!;
}

/** Bytes one page of one layer (K or V) takes, as the native pool lays it out. */
export function kvPageBytes(dtype: KVDType, numKvHeads: number, pageSize: number, headDim: number): number {
  const elems = numKvHeads * pageSize * headDim;
  return dtype === "fp8_e4m3" ? elems + Math.ceil((numKvHeads * pageSize * 4) / 16) * 16 : 2 * elems;
}

/**
 * fp32 values to e4m3 codes as the library stores them: nearest, ties to even, magnitudes past 448
 * saturating to +-448, NaN to 0x7F (the GPU's cvt.rn.satfinite).
 */
export function encodeE4m3(values: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) {
    f32[0] = values[i]!;
    const x = u32[0]!,
      sign = (x >>> 24) & 0x80,
      abs = x & 0x7fffffff;
    if (abs > 0x7f800000) out[i] = 0x7f;
    else if (abs > 0x43e00000) out[i] = sign | 0x7e;
    else if (abs < 0x3c800000) {
      // Below 2^-6: a multiple of 2^-9, rounded half to even (exact in doubles).
      const scaled = Math.abs(f32[0]!) * 512,
        whole = Math.floor(scaled),
        frac = scaled - whole;
      out[i] = sign | (frac > 0.5 || (frac === 0.5 && whole & 1) ? whole + 1 : whole);
    } else out[i] = sign | (((abs + 0x7ffff + ((abs >>> 20) & 1)) >>> 20) - (120 << 3));
  }
  return out;
}

/** e4m3 codes to fp32 values (bias 7, largest 448, 0x7F and 0xFF NaN). */
export function decodeE4m3(codes: Uint8Array): Float32Array {
  const out = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i]!,
      e = (c >> 3) & 15,
      m = c & 7;
    const magnitude = e === 15 && m === 7 ? Number.NaN : e === 0 ? m * 2 ** -9 : (1 + m / 8) * 2 ** (e - 7);
    out[i] = c & 0x80 ? -magnitude : magnitude;
  }
  return out;
}
