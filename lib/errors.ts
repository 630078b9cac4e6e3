// Typed errors: one class per status code of cuda/include/persistentkv.h, carrying the native message.
// test/errors.test.ts checks this table against the header.

export const Status = {
  OK: 0,
  INVALID_ARGUMENT: 1,
  NULL_POINTER: 2,
  INVALID_HANDLE: 3,
  UNSUPPORTED: 4,
  OUT_OF_MEMORY: 5,
  NO_DEVICE: 6,
  CUDA: 7,
  OUT_OF_RANGE: 8,
  VERSION_MISMATCH: 9,
  STALE_PLAN: 10,
  OUT_OF_PAGES: 11,
  SWAP_FULL: 12,
  BAD_STATE: 13,
  INTERNAL: 14,
} as const;
export type StatusName = keyof typeof Status;

/** Every error PersistentKV throws. `code` is the header's status code, `status` its name. */
export class PkvError extends Error {
  readonly code: number;
  readonly status: string;
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
    this.status = statusName(code);
    this.name = new.target.name;
  }
}
export class InvalidArgumentError extends PkvError {}
export class NullPointerError extends PkvError {}
export class InvalidHandleError extends PkvError {}
export class UnsupportedError extends PkvError {}
export class OutOfMemoryError extends PkvError {}
export class NoDeviceError extends PkvError {}
export class CudaError extends PkvError {}
export class OutOfRangeError extends PkvError {}
export class VersionMismatchError extends PkvError {}
export class StalePlanError extends PkvError {}
export class OutOfPagesError extends PkvError {}
export class SwapFullError extends PkvError {}
export class BadStateError extends PkvError {}
export class InternalError extends PkvError {}
/** The native library could not be found or loaded; the message lists every path tried. */
export class LibraryNotFoundError extends PkvError {}

const classes: Record<number, new (code: number, message: string) => PkvError> = {
  [Status.INVALID_ARGUMENT]: InvalidArgumentError,
  [Status.NULL_POINTER]: NullPointerError,
  [Status.INVALID_HANDLE]: InvalidHandleError,
  [Status.UNSUPPORTED]: UnsupportedError,
  [Status.OUT_OF_MEMORY]: OutOfMemoryError,
  [Status.NO_DEVICE]: NoDeviceError,
  [Status.CUDA]: CudaError,
  [Status.OUT_OF_RANGE]: OutOfRangeError,
  [Status.VERSION_MISMATCH]: VersionMismatchError,
  [Status.STALE_PLAN]: StalePlanError,
  [Status.OUT_OF_PAGES]: OutOfPagesError,
  [Status.SWAP_FULL]: SwapFullError,
  [Status.BAD_STATE]: BadStateError,
  [Status.INTERNAL]: InternalError,
};

export function statusName(code: number): string {
  for (const [name, value] of Object.entries(Status))
    if (value === code) return `PKV_${name === "OK" ? "OK" : `ERR_${name}`}`;
  return "PKV_UNKNOWN_STATUS";
}

/** The error for a status code: the matching subclass, or PkvError for an unknown code. */
export function errorFor(code: number, message: string): PkvError {
  const Class = classes[code] ?? PkvError;
  return new Class(code, message);
}

/** Throws the typed error for a code raised in TypeScript (the cache layer's own checks). */
export function fail(code: number, message: string): never {
  throw errorFor(code, message);
}
