// A free list of small integer ids (pages, block-table rows, swap slots): a preallocated stack, so taking
// and returning ids allocates nothing. A fresh stack hands out 0, 1, 2, ... which keeps dumps readable.
export class IdStack {
  readonly total: number;
  readonly #ids: Int32Array;
  #count: number;

  constructor(total: number) {
    this.total = total;
    this.#ids = new Int32Array(total);
    for (let i = 0; i < total; i++) this.#ids[i] = total - 1 - i;
    this.#count = total;
  }

  /** Ids on the stack. */
  get count(): number {
    return this.#count;
  }

  /** Pops an id, or returns -1 when none is left. */
  take(): number {
    return this.#count === 0 ? -1 : this.#ids[--this.#count]!;
  }

  give(id: number): void {
    this.#ids[this.#count++] = id;
  }

  /** The ids on the stack, bottom to top (a copy, for inspection). */
  ids(): Int32Array {
    return this.#ids.slice(0, this.#count);
  }
}
