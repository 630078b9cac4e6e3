// The block table: page ids of every live sequence, one fixed-width row each, in the pool's pinned host
// memory, plus dirty_from[row], the first column changed since the plan last uploaded the row.
//
// Contract with the decode plan (cuda/src/core/kvpool.h): the cache writes page ids and only ever LOWERS
// dirty_from; the plan uploads columns dirty_from.. of each row it uses and resets dirty_from. So a step
// costs O(pages added) here and O(dirty columns) in the upload.
//
// Why a fixed-width table and not CSR (indptr + indices), measured with bench/kvcache.bench.ts on the
// 2-core CI host, 256 sequences each appending one token per step: a CSR table must be rebuilt (or
// shifted) every step because any sequence may grow, which took 5.2 us p50 for 8.8K pages (b256-short)
// and 9.0 us for 37.6K pages (b128-serving x2), growing with total context, and uploads 36-151 KB per
// step. Here a step writes one column for the ~1 in 16 sequences that start a page and describeBatch
// takes 1.1-1.3 us, independent of context length; the upload is the dirty columns plus rows and
// lengths, about 2 KB. The price is pinned memory for the full width (maxSequences x width x 4 bytes,
// 16 MiB at the defaults for page size 16), which is small next to the pages themselves.
import { type Pointer, toArrayBuffer } from "bun:ffi";
import { IdStack } from "./id-stack";

export class BlockTable {
  readonly rows: number;
  readonly width: number;
  #table: Int32Array;
  #dirty: Int32Array;
  readonly #memory: ArrayBuffer[];
  readonly #freeRows: IdStack;

  constructor(tableAddress: Pointer, dirtyAddress: Pointer, rows: number, width: number) {
    this.rows = rows;
    this.width = width;
    const table = toArrayBuffer(tableAddress, 0, rows * width * 4);
    const dirty = toArrayBuffer(dirtyAddress, 0, rows * 4);
    this.#memory = [table, dirty];
    this.#table = new Int32Array(table);
    this.#dirty = new Int32Array(dirty);
    this.#freeRows = new IdStack(rows);
  }

  get freeRowCount(): number {
    return this.#freeRows.count;
  }

  /** Takes an unused row (-1 if none). Its old columns are stale until written. */
  acquireRow(): number {
    return this.#freeRows.take();
  }

  releaseRow(row: number): void {
    this.#freeRows.give(row);
  }

  get(row: number, column: number): number {
    return this.#table[row * this.width + column]!;
  }

  set(row: number, column: number, page: number): void {
    this.#table[row * this.width + column] = page;
    if (this.#dirty[row]! > column) this.#dirty[row] = column;
  }

  /** Copies the first `count` columns of row `from` into row `to` (a fork). */
  copyRow(from: number, to: number, count: number): void {
    if (count === 0) return;
    const start = from * this.width;
    this.#table.copyWithin(to * this.width, start, start + count);
    this.#dirty[to] = 0;
  }

  /** Detaches the views once the pool is freed: later access reads nothing instead of freed memory. */
  detach(): void {
    for (const memory of this.#memory) if (!memory.detached) memory.transfer(0);
    this.#table = new Int32Array(0);
    this.#dirty = new Int32Array(0);
  }
}
