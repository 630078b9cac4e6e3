// Plans from a page table the caller owns (FlashInfer's indptr / indices / last_page_len, or a block table
// with sequence lengths), over a KVPool of caller memory. The library checks every page id and length;
// here only what it cannot see: that each array is an Int32Array long enough for what the others say,
// since native code reads exactly as far as indptr and the batch tell it to.
import type { Pointer } from "bun:ffi";
import { check } from "../ffi/call";
import { native } from "../ffi/loader";
import { InvalidArgumentError, Status } from "../errors";
import { checkCount, INT32_MAX, show } from "../validate";
import { KVPool } from "./kvpool";

/** FlashInfer's paged layout: request b holds pages indices[indptr[b] .. indptr[b+1]), its last one lastPageLen[b] tokens. */
export interface PagedTable {
  indptr: Int32Array;
  indices: Int32Array;
  lastPageLen: Int32Array;
}

/** A block table: request b's pages at blockTable[b * stride ..], seqLens[b] tokens. */
export interface CallerBlockTable {
  blockTable: Int32Array;
  stride: number;
  seqLens: Int32Array;
}

export type CallerPageTable = PagedTable | CallerBlockTable;

function int32s(name: string, value: unknown, length: number): Int32Array {
  if (!(value instanceof Int32Array) || value.length < length)
    throw new InvalidArgumentError(
      Status.INVALID_ARGUMENT,
      `planPaged: ${name} ${show(value)} must be an Int32Array of at least ${length} entries`,
    );
  return value;
}

function batchOf(array: unknown, name: string, maxBatch: number): number {
  const n = array instanceof Int32Array ? array.length : -1;
  if (n < 1 || n > maxBatch)
    throw new InvalidArgumentError(
      Status.INVALID_ARGUMENT,
      `planPaged: ${name} must be an Int32Array of 1..${maxBatch} entries (one per request), got ${show(array)}${n > 0 ? ` of ${n}` : ""}`,
    );
  return n;
}

/** Fills `info` (a pkv_plan_info) with the plan of the caller's table over `pool`. */
export function planCallerTable(
  engine: Pointer,
  pool: KVPool,
  table: CallerPageTable,
  policy: number,
  maxBatch: number,
  info: Uint8Array,
): void {
  if (!(pool instanceof KVPool))
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `planPaged: ${show(pool)} is not a KVPool (KVPool.wrap)`);
  if (typeof table !== "object" || table === null)
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, "planPaged: the page table must be an object");
  if ("indptr" in table) {
    const batch = batchOf(table.lastPageLen, "lastPageLen", maxBatch);
    const indptr = int32s("indptr", table.indptr, batch + 1);
    const indices = int32s("indices", table.indices, Math.max(0, indptr[batch]!));
    const status = native().pkv_decode_plan_paged(
      engine,
      pool.poolHandle,
      batch,
      indptr,
      indices,
      table.lastPageLen,
      policy,
      info,
    );
    return check(status, "pkv_decode_plan_paged");
  }
  if ("blockTable" in table) {
    const batch = batchOf(table.seqLens, "seqLens", maxBatch);
    const stride = checkCount("planPaged", "stride", table.stride, 1, INT32_MAX);
    const blockTable = int32s("blockTable", table.blockTable, batch * stride);
    const status = native().pkv_decode_plan_block_table(
      engine,
      pool.poolHandle,
      batch,
      blockTable,
      stride,
      table.seqLens,
      policy,
      info,
    );
    return check(status, "pkv_decode_plan_block_table");
  }
  throw new InvalidArgumentError(
    Status.INVALID_ARGUMENT,
    "planPaged: the page table must be { indptr, indices, lastPageLen } or { blockTable, stride, seqLens }",
  );
}
