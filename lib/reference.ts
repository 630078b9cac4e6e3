// The CPU reference decode attention (pkv_reference_decode) on host typed arrays: the answer every kernel
// is checked against. Native code trusts the arrays' lengths, so every length is checked here first.
import { check } from "./ffi/call";
import { ATTENTION_SHAPE } from "./ffi/layouts";
import { native } from "./ffi/loader";
import { type DType, kvDtypeCode, kvPageBytes } from "./dtype";
import { InvalidArgumentError, Status } from "./errors";

export interface AttentionShape {
  numQoHeads: number;
  numKvHeads: number;
  /** 64, 128 or 256. */
  headDim: number;
  /** A power of two in 1..256. */
  pageSize: number;
  dtype: DType;
  /** Softmax scale; default (or 0) 1 / sqrt(headDim). */
  smScale?: number;
}

/** The shape of FP8 pages ("fp8_e4m3"), with q and out of queryDtype ("f16" by default). */
export type Fp8AttentionShape = Omit<AttentionShape, "dtype"> & { dtype: "fp8_e4m3"; queryDtype?: DType };

export interface ReferenceDecodeArgs {
  shape: AttentionShape | Fp8AttentionShape;
  /** [batch + 1]: sequence b owns pageIndices[pageIndptr[b] .. pageIndptr[b + 1]). */
  pageIndptr: Int32Array;
  pageIndices: Int32Array;
  /** [batch]: context length of each sequence (its last page may be partial). */
  seqLens: Int32Array;
  /**
   * [numPages][numKvHeads][pageSize][headDim] 16-bit values (HND pages); "fp8_e4m3": bytes of pages in the
   * pool's FP8 layout (codes, then scales; persistentkv.h, "FP8 KV storage").
   */
  kPages: Uint16Array | Uint8Array;
  vPages: Uint16Array | Uint8Array;
  numPages: number;
  /** [batch][numQoHeads][headDim] in, and out. */
  q: Uint16Array;
  out: Uint16Array;
  /** [batch][numQoHeads]: natural log of each softmax denominator; -Infinity for an empty context. */
  lse?: Float32Array;
}

function invalid(message: string): never {
  throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `referenceDecode: ${message}`);
}

function expectArray(
  name: string,
  value: unknown,
  Type: abstract new (...args: never[]) => unknown,
  length?: number,
): void {
  if (!(value instanceof Type)) invalid(`${name} must be a ${Type.name}`);
  const actual = (value as ArrayLike<number>).length;
  if (length !== undefined && actual !== length) invalid(`${name} has ${actual} elements, expected ${length}`);
}

function expectInt(name: string, value: number, min: number): void {
  if (!Number.isInteger(value) || value < min || value > 0x7fffffff)
    invalid(`${name} ${value} is not an int32 >= ${min}`);
}

/** Decode attention of one query token per sequence over its paged context, on the CPU. */
export function referenceDecode(args: ReferenceDecodeArgs): void {
  const { shape, pageIndptr, pageIndices, seqLens, kPages, vPages, numPages, q, out, lse } = args;
  const { numQoHeads, numKvHeads, headDim, pageSize, smScale = 0 } = shape;
  // The native call checks the allowed values (head dims, page sizes, group sizes); here only what the
  // length arithmetic needs.
  expectInt("numQoHeads", numQoHeads, 1);
  expectInt("numKvHeads", numKvHeads, 1);
  expectInt("headDim", headDim, 1);
  expectInt("pageSize", pageSize, 1);
  expectInt("numPages", numPages, 0);
  if (!Number.isFinite(smScale) || smScale < 0) invalid(`smScale ${smScale} is not finite and >= 0`);
  expectArray("seqLens", seqLens, Int32Array);
  const batch = seqLens.length;
  expectArray("pageIndptr", pageIndptr, Int32Array, batch + 1);
  expectArray("pageIndices", pageIndices, Int32Array);
  // Native code reads pageIndices[pageIndptr[0] .. pageIndptr[batch]): the ranges must lie inside the array.
  for (let b = 0; b < batch; b++)
    if (pageIndptr[b]! < 0 || pageIndptr[b]! > pageIndptr[b + 1]! || pageIndptr[b + 1]! > pageIndices.length)
      invalid(
        `pageIndptr of sequence ${b}, [${pageIndptr[b]}, ${pageIndptr[b + 1]}), is not a range of the ` +
          `${pageIndices.length} page indices`,
      );
  const fp8 = shape.dtype === "fp8_e4m3";
  const pageElems = fp8 ? kvPageBytes(shape.dtype, numKvHeads, pageSize, headDim) : numKvHeads * pageSize * headDim;
  expectArray("kPages", kPages, fp8 ? Uint8Array : Uint16Array, numPages * pageElems);
  expectArray("vPages", vPages, fp8 ? Uint8Array : Uint16Array, numPages * pageElems);
  expectArray("q", q, Uint16Array, batch * numQoHeads * headDim);
  expectArray("out", out, Uint16Array, batch * numQoHeads * headDim);
  if (lse !== undefined) expectArray("lse", lse, Float32Array, batch * numQoHeads);

  const struct = ATTENTION_SHAPE.encode({
    numQoHeads,
    numKvHeads,
    headDim,
    pageSize,
    dtype: kvDtypeCode(shape.dtype, shape.dtype === "fp8_e4m3" ? shape.queryDtype : undefined),
    smScale,
  });
  // Typed arrays are passed themselves (not ptr()), which is safe for synchronous calls (DESIGN.md).
  check(
    native().pkv_reference_decode(
      struct,
      batch,
      pageIndptr,
      pageIndices,
      seqLens,
      kPages,
      vPages,
      numPages,
      q,
      out,
      lse ?? null,
    ),
    "pkv_reference_decode",
  );
}
