import { IdStack } from "./id-stack";

// Page ids and their holders: a free stack plus one reference count per page.
//
// A "holder" is a sequence (live or swapped out) whose page list names the page. Pages with no holder
// are either on the free stack or parked in the prefix cache; the allocator only knows the first kind.
// Everything is preallocated typed arrays, so taking and dropping pages on the per-step path allocates
// nothing.
export class PageAllocator {
  readonly numPages: number;
  readonly pageSize: number;
  readonly #refs: Int32Array;
  readonly #swappedHolders: Int32Array; // holders that are swapped out (they keep shared pages resident)
  readonly #free: IdStack;
  #used = 0; // pages with at least one holder
  #shared = 0; // pages with more than one holder
  // Tokens stored in each page. Every holder of a page agrees on it: a partial page is always the last
  // page of each of its holders, and a holder that appends copies a shared partial page first.
  readonly #fill: Int32Array;
  #filled = 0; // sum of #fill over held pages, so waste is O(1) to report

  constructor(numPages: number, pageSize: number) {
    this.numPages = numPages;
    this.pageSize = pageSize;
    this.#refs = new Int32Array(numPages);
    this.#swappedHolders = new Int32Array(numPages);
    this.#fill = new Int32Array(numPages);
    this.#free = new IdStack(numPages);
  }

  get freeCount(): number {
    return this.#free.count;
  }
  get usedCount(): number {
    return this.#used;
  }
  get sharedCount(): number {
    return this.#shared;
  }
  /** Unfilled slots of held pages: the tails of partial last pages. */
  get wastedSlots(): number {
    return this.#used * this.pageSize - this.#filled;
  }

  refs(page: number): number {
    return this.#refs[page]!;
  }
  fillOf(page: number): number {
    return this.#fill[page]!;
  }

  /** Whether one live sequence alone holds the page, so writing its slots changes no one else's K and V. */
  writable(page: number): boolean {
    return this.#refs[page] === 1 && this.#swappedHolders[page] === 0;
  }

  /** Counts a holder of the page in or out of the swapped-out ones (delta +1 or -1). */
  holdSwapped(page: number, delta: number): void {
    this.#swappedHolders[page]! += delta;
  }

  /** Pops a free page for a new holder (fill 0), or returns -1 when the stack is empty. */
  take(): number {
    const page = this.#free.take();
    if (page < 0) return -1;
    this.#refs[page] = 1;
    this.#fill[page] = 0;
    this.#used++;
    return page;
  }

  /** Adds a holder to a held page, or revives an unheld cached page (its fill is kept). */
  retain(page: number): void {
    const refs = ++this.#refs[page]!;
    if (refs === 1) {
      this.#used++;
      this.#filled += this.#fill[page]!;
    } else if (refs === 2) this.#shared++;
  }

  /** Drops a holder and returns how many remain; at 0 the caller frees the page or parks it in the prefix cache. */
  release(page: number): number {
    const refs = --this.#refs[page]!;
    if (refs === 0) {
      this.#used--;
      this.#filled -= this.#fill[page]!;
    } else if (refs === 1) this.#shared--;
    return refs;
  }

  /** Returns a page with no holder to the free stack. */
  free(page: number): void {
    this.#free.give(page);
  }

  /** Sets the token count of a held page. */
  setFill(page: number, fill: number): void {
    this.#filled += fill - this.#fill[page]!;
    this.#fill[page] = fill;
  }

  /** The free stack, bottom to top (a copy, for inspection). */
  freePages(): Int32Array {
    return this.#free.ids();
  }
}
