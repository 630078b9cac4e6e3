// The 16-bit storage types of K, V, q and out, as bits in Uint16Arrays, and conversions to fp32.
import { InvalidArgumentError, Status } from "./errors";

export type DType = "f16" | "bf16";
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
