// The block table: page ids of every live sequence, one fixed-width row each, in the pool's pinned host
// memory, plus dirty_from[row], the first column changed since the plan last uploaded the row.
//
// Contract with the decode plan (cuda/src/core/kvpool.h): the cache writes page ids and only ever LOWERS
// dirty_from; the plan uploads columns dirty_from.. of each row it uses and resets dirty_from. So a step
// costs O(pages added) here and O(dirty columns) in the upload.
//
// FORMAT_CHOICE
import { toArrayBuffer } from "bun:ffi";

export class BlockTable {
  readonly rows: number;
  readonly width: number;
  #table: Int32Array;
  #dirty: Int32Array;
  readonly #memory: ArrayBuffer[];
  readonly #freeRows: Int32Array; // stack; lowest row on top
  #freeCount: number;

  constructor(tableAddress: number, dirtyAddress: number, rows: number, width: number) {
    this.rows = rows;
    this.width = width;
    const table = toArrayBuffer(tableAddress, 0, rows * width * 4);
    const dirty = toArrayBuffer(dirtyAddress, 0, rows * 4);
    this.#memory = [table, dirty];
    this.#table = new Int32Array(table);
    this.#dirty = new Int32Array(dirty);
    this.#freeRows = new Int32Array(rows);
    for (let i = 0; i < rows; i++) this.#freeRows[i] = rows - 1 - i;
    this.#freeCount = rows;
  }

  get freeRowCount(): number {
    return this.#freeCount;
  }

  /** Takes an unused row (-1 if none). Its old columns are stale until written. */
  acquireRow(): number {
    return this.#freeCount === 0 ? -1 : this.#freeRows[--this.#freeCount]!;
  }

  releaseRow(row: number): void {
    this.#freeRows[this.#freeCount++] = row;
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
