// Checks of the numbers and names callers pass to the public API, before anything reaches native code or
// changes state. bun:ffi converts a JS number to the C type without complaint (1.5 -> 1, NaN -> 0,
// -1 -> 2^64 - 1 as a u64, 2^32 + 1 -> 1 as an i32), so every count, size, offset and index goes through
// one of these, and every message names the method and the argument.
import { InvalidArgumentError, OutOfRangeError, Status } from "./errors";

export const INT32_MAX = 0x7fffffff;

/** A value as a message shows it: numbers and strings as written, objects by their class. */
export function show(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "bigint") return `${value}n`;
  if (value === null || (typeof value !== "object" && typeof value !== "function")) return String(value);
  if (typeof value === "function") return "a function";
  return Array.isArray(value) ? "an array" : `a ${(value as object).constructor?.name ?? "null-prototype object"}`;
}

function invalid(message: string): InvalidArgumentError {
  return new InvalidArgumentError(Status.INVALID_ARGUMENT, message);
}

/**
 * A size, count or offset: a safe integer in min..max (default 0..2^53-1). Anything else, negative and
 * too large included, is InvalidArgumentError: it is not a value the argument can take at all.
 */
export function checkCount(
  method: string,
  name: string,
  value: unknown,
  min = 0,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min || value > max)
    throw invalid(`${method}: ${name} ${show(value)} is not an integer in ${min}..${max}`);
  return value;
}

/**
 * An index into something of `size` elements (a layer, a slot, a bucket): InvalidArgumentError unless
 * it is an integer, OutOfRangeError when it is one outside 0..size-1.
 */
export function checkIndex(method: string, name: string, value: unknown, size: number): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value))
    throw invalid(`${method}: ${name} ${show(value)} is not an integer`);
  if (value < 0 || value >= size)
    throw new OutOfRangeError(Status.OUT_OF_RANGE, `${method}: ${name} ${value} is outside 0..${size - 1}`);
  return value;
}

/** A finite number in min..max (a scale, a fraction). */
export function checkFinite(method: string, name: string, value: unknown, min = -Infinity, max = Infinity): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max)
    throw invalid(`${method}: ${name} ${show(value)} is not a finite number in ${min}..${max}`);
  return value;
}

/**
 * The value a name stands for, from a Map: a plain object's lookup would also find "toString" or
 * "constructor" on its prototype and hand back a function.
 */
export function checkName<T>(method: string, name: string, value: unknown, table: ReadonlyMap<string, T>): T {
  const found = typeof value === "string" ? table.get(value) : undefined;
  if (found === undefined)
    throw invalid(
      `${method}: ${name} ${show(value)} is not one of ${[...table.keys()].map((k) => `"${k}"`).join(", ")}`,
    );
  return found;
}

/** An options argument: undefined (then {}) or a plain object. */
export function checkOptions<T extends object>(method: string, value: T | undefined): T {
  if (value === undefined) return {} as T;
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw invalid(`${method}: options ${show(value)} is not an object`);
  return value;
}
