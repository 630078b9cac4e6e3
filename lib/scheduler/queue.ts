// Requests not running (waiting, or preempted: swapped out or freed for recompute), kept in arrival
// order: FCFS means the head is the oldest, whatever its state, and nothing overtakes it.
export interface Queued {
  readonly arrival: number;
}

export class ArrivalQueue<T extends Queued> {
  readonly #items: T[] = [];

  get length(): number {
    return this.#items.length;
  }
  get head(): T | undefined {
    return this.#items[0];
  }
  shift(): T | undefined {
    return this.#items.shift();
  }

  /** Inserts in arrival order: a preempted request goes back before everything that came after it. */
  insert(item: T): void {
    let lo = 0;
    let hi = this.#items.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#items[mid]!.arrival < item.arrival) lo = mid + 1;
      else hi = mid;
    }
    this.#items.splice(lo, 0, item);
  }

  remove(item: T): boolean {
    const i = this.#items.indexOf(item);
    if (i >= 0) this.#items.splice(i, 1);
    return i >= 0;
  }

  count(predicate: (item: T) => boolean): number {
    let n = 0;
    for (const item of this.#items) if (predicate(item)) n++;
    return n;
  }

  [Symbol.iterator](): Iterator<T> {
    return this.#items[Symbol.iterator]();
  }
}
