// Addresses a caller hands in (a framework's data_ptr(), a cudaStream_t, bun:ffi's ptr()): numbers or
// BigInts, checked here so that bun:ffi never converts a fraction, a negative or a value past 64 bits.
import { InvalidArgumentError, Status } from "../errors";
import { show } from "../validate";

/** A native address or handle: a non-negative safe integer (bun:ffi's Pointer is one) or a BigInt below 2^64. */
export type Address = number | bigint;

const U64_LIMIT = 1n << 64n;

/** The address as a BigInt, for a u64 argument. */
export function checkAddress(method: string, name: string, value: unknown): bigint {
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) return BigInt(value);
  if (typeof value === "bigint" && value >= 0n && value < U64_LIMIT) return value;
  throw new InvalidArgumentError(
    Status.INVALID_ARGUMENT,
    `${method}: ${name} ${show(value)} is not an address (a non-negative safe integer or a BigInt below 2^64)`,
  );
}
