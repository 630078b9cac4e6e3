// Turning native statuses into typed exceptions, and reading out-parameters.
import type { Pointer } from "bun:ffi";
import { errorFor } from "../errors";
import { native } from "./loader";

/** Throws the typed error for a failed status, with the native message (or `op` if it left none). */
export function check(status: number, op: string): void {
  if (status === 0) return;
  const message = String(native().pkv_last_error());
  throw errorFor(status, message || `${op} failed with status ${status}`);
}

/** Calls `fn` with a one-element u64 out-parameter and returns its value as a number. */
export function outU64(op: string, fn: (out: BigUint64Array) => number): number {
  const out = new BigUint64Array(1);
  check(fn(out), op);
  const value = Number(out[0]);
  if (!Number.isSafeInteger(value)) throw new Error(`${op}: value ${out[0]} is not a safe integer`);
  return value;
}

/** Calls `fn` with an out-parameter receiving a native handle or address. */
export function outPointer(op: string, fn: (out: BigUint64Array) => number): Pointer {
  return outU64(op, fn) as Pointer;
}

export function outI32(op: string, fn: (out: Int32Array) => number): number {
  const out = new Int32Array(1);
  check(fn(out), op);
  return out[0]!;
}
