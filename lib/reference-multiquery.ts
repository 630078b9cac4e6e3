// The CPU reference of several query tokens per sequence (pkv_reference_multiquery): sequence b's
// query token j sits at position seqLens[b] - qLen + j and sees its context up to that position. Native
// code trusts the arrays' lengths, so every length is checked here first.
import { check } from "./ffi/call";
import { ATTENTION_SHAPE } from "./ffi/layouts";
import { native } from "./ffi/loader";
import { dtypeCode } from "./dtype";
import { InvalidArgumentError, Status } from "./errors";
import type { ReferenceDecodeArgs } from "./reference";

export interface ReferenceMultiqueryArgs extends ReferenceDecodeArgs {
  /** [batch + 1]: sequence b's query tokens are rows qIndptr[b] .. qIndptr[b + 1] of q, out and lse. */
  qIndptr: Int32Array;
}

function invalid(message: string): never {
  throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `referenceMultiquery: ${message}`);
}

function expectLength(
  name: string,
  value: { length: number } | undefined,
  Type: abstract new (...args: never[]) => unknown,
  length: number,
): void {
  if (value === undefined || !(value instanceof Type)) invalid(`${name} must be a ${Type.name}`);
  if (value.length !== length) invalid(`${name} has ${value.length} elements, expected ${length}`);
}

/** Causal attention of each sequence's newest query tokens over its paged context, on the CPU. */
export function referenceMultiquery(args: ReferenceMultiqueryArgs): void {
  const { shape, qIndptr, pageIndptr, pageIndices, seqLens, kPages, vPages, numPages, q, out, lse } = args;
  const { numQoHeads, numKvHeads, headDim, pageSize, smScale = 0 } = shape;
  for (const [name, value] of Object.entries({ numQoHeads, numKvHeads, headDim, pageSize, numPages }))
    if (!Number.isInteger(value) || value < 0 || value > 0x7fffffff) invalid(`${name} ${value} is not an int32 >= 0`);
  if (!(seqLens instanceof Int32Array)) invalid("seqLens must be an Int32Array");
  const batch = seqLens.length;
  expectLength("qIndptr", qIndptr, Int32Array, batch + 1);
  expectLength("pageIndptr", pageIndptr, Int32Array, batch + 1);
  if (!(pageIndices instanceof Int32Array)) invalid("pageIndices must be an Int32Array");
  for (let b = 0; b < batch; b++) {
    if (pageIndptr[b]! < 0 || pageIndptr[b]! > pageIndptr[b + 1]! || pageIndptr[b + 1]! > pageIndices.length)
      invalid(`pageIndptr of sequence ${b} is not a range of the ${pageIndices.length} page indices`);
    if (qIndptr[b]! < 0 || qIndptr[b]! > qIndptr[b + 1]!) invalid(`qIndptr of sequence ${b} is not a range`);
  }
  const tokens = qIndptr[batch]!;
  const pageElems = numKvHeads * pageSize * headDim;
  expectLength("kPages", kPages, Uint16Array, numPages * pageElems);
  expectLength("vPages", vPages, Uint16Array, numPages * pageElems);
  expectLength("q", q, Uint16Array, tokens * numQoHeads * headDim);
  expectLength("out", out, Uint16Array, tokens * numQoHeads * headDim);
  if (lse !== undefined) expectLength("lse", lse, Float32Array, tokens * numQoHeads);
  const struct = ATTENTION_SHAPE.encode({
    numQoHeads,
    numKvHeads,
    headDim,
    pageSize,
    dtype: dtypeCode(shape.dtype),
    smScale,
  });
  check(
    native().pkv_reference_multiquery(
      struct,
      batch,
      qIndptr,
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
    "pkv_reference_multiquery",
  );
}
