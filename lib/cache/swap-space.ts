// Slots of the pool's pinned swap space, each holding one page (every layer, K and V).
export class SwapSpace {
  readonly total: number;
  readonly #free: Int32Array; // stack; lowest slot on top
  #freeCount: number;

  constructor(total: number) {
    this.total = total;
    this.#free = new Int32Array(total);
    for (let i = 0; i < total; i++) this.#free[i] = total - 1 - i;
    this.#freeCount = total;
  }

  get freeCount(): number {
    return this.#freeCount;
  }
  get usedCount(): number {
    return this.total - this.#freeCount;
  }

  /** Takes a free slot; the caller checked freeCount first. */
  take(): number {
    return this.#free[--this.#freeCount]!;
  }

  free(slot: number): void {
    this.#free[this.#freeCount++] = slot;
  }
}
