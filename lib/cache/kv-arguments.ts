// Checks of the arguments that carry K and V data and token ids, before anything reaches native code.
import { NativeBuffer } from "../buffers";
import type { DType } from "../dtype";
import { InvalidArgumentError, Status } from "../errors";

/** K or V of n tokens, [n][numKvHeads][headDim]: 16-bit storage bits on the host, or a buffer of the runtime. */
export type KVData = Uint16Array | Float16Array | NativeBuffer;

/**
 * Checks that k and v are both host arrays of exactly `elements` 16-bit values (Float16Array only for f16),
 * or both buffers of at least that many bytes. Returns whether they are buffers.
 */
export function checkKVData(op: string, dtype: DType, k: unknown, v: unknown, elements: number): boolean {
  const kDevice = k instanceof NativeBuffer;
  if (kDevice !== v instanceof NativeBuffer)
    throw new InvalidArgumentError(
      Status.INVALID_ARGUMENT,
      `${op}: k and v must both be host arrays or both be buffers`,
    );
  for (const [name, data] of [
    ["k", k],
    ["v", v],
  ] as const) {
    if (data instanceof NativeBuffer) {
      if (data.bytes < elements * 2)
        throw new InvalidArgumentError(
          Status.INVALID_ARGUMENT,
          `${op}: ${name} holds ${data.bytes} bytes, less than the ${elements * 2} of [n][numKvHeads][headDim] 16-bit values`,
        );
      continue;
    }
    const bits = data instanceof Uint16Array || (dtype === "f16" && data instanceof Float16Array);
    if (!bits)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `${op}: ${name} is a ${describe(data)}; a ${dtype} cache takes Uint16Array bits${dtype === "f16" ? " or a Float16Array" : ""}`,
      );
    if ((data as Uint16Array).length !== elements)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `${op}: ${name} has ${(data as Uint16Array).length} values, not the ${elements} of [n][numKvHeads][headDim]`,
      );
  }
  return kDevice;
}

const INT32_MIN = -0x80000000;
const INT32_MAX = 0x7fffffff;

/** Token ids: an Int32Array, or an array of int32 integers. */
export function checkTokens(op: string, tokens: unknown): ArrayLike<number> {
  if (tokens instanceof Int32Array) return tokens;
  if (!Array.isArray(tokens))
    throw new InvalidArgumentError(
      Status.INVALID_ARGUMENT,
      `${op}: token ids must be an Int32Array or an array of integers`,
    );
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (typeof t !== "number" || !Number.isInteger(t) || t < INT32_MIN || t > INT32_MAX)
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `${op}: token id [${i}] = ${t} is not an int32 integer`);
  }
  return tokens;
}

function describe(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  return (value as object).constructor?.name ?? typeof value;
}
