// The prefix cache: full pages found by the token ids that filled them, so requests that start with the
// same tokens (a system prompt) share pages instead of storing the same K and V again.
//
// A page is identified by a chain link: (parent link, its page's token ids). Links get ids that are never
// reused, so a link names one exact token prefix even after its parent was evicted; a lookup compares the
// parent link and every token, so a hash collision can never hand out the wrong page. Registered pages
// that lose their last holder are "parked": still findable, and evicted least recently released first.
// Every table is a preallocated typed array indexed by page id; only the bucket map grows.
export class PrefixCache {
  readonly #pageSize: number;
  #tokens: Int32Array | null = null; // [page][pageSize] token ids of registered pages; made on first use
  readonly #link: Float64Array; // link id of a registered page, 0 when unregistered
  readonly #parent: Float64Array; // link id of its predecessor, 0 for a sequence's first page
  readonly #key: Float64Array;
  readonly #sameKey: Int32Array; // next page in the same bucket, -1 at the end
  readonly #buckets = new Map<number, number>(); // hash key -> first page of the bucket
  #lastLink = 0;
  // Parked pages in release order: a doubly linked list threaded through page ids.
  readonly #parked: Uint8Array;
  readonly #older: Int32Array;
  readonly #newer: Int32Array;
  #oldest = -1;
  #newest = -1;
  #parkedCount = 0;

  constructor(numPages: number, pageSize: number) {
    this.#pageSize = pageSize;
    this.#link = new Float64Array(numPages);
    this.#parent = new Float64Array(numPages);
    this.#key = new Float64Array(numPages);
    this.#sameKey = new Int32Array(numPages);
    this.#parked = new Uint8Array(numPages);
    this.#older = new Int32Array(numPages);
    this.#newer = new Int32Array(numPages);
  }

  /** Registered pages with no holder: reusable by a prefix hit, or evictable for a new page. */
  get evictableCount(): number {
    return this.#parkedCount;
  }

  /** The link id of a registered page, 0 if it is not registered. */
  linkOf(page: number): number {
    return this.#link[page]!;
  }

  isParked(page: number): boolean {
    return this.#parked[page] === 1;
  }

  /** The page holding the link (parent, tokens[offset .. offset + pageSize)), or -1. */
  lookup(parent: number, tokens: ArrayLike<number>, offset: number): number {
    const size = this.#pageSize;
    const key = chainKey(parent, tokens, offset, size);
    for (let page = this.#buckets.get(key) ?? -1; page >= 0; page = this.#sameKey[page]!) {
      if (this.#parent[page] !== parent) continue;
      let i = 0;
      while (i < size && this.#tokens![page * size + i] === tokens[offset + i]) i++;
      if (i === size) return page;
    }
    return -1;
  }

  /** Registers a full page as the link (parent, tokens[offset ..)), which lookup did not find; returns the link id. */
  register(page: number, parent: number, tokens: ArrayLike<number>, offset: number): number {
    const size = this.#pageSize;
    const key = chainKey(parent, tokens, offset, size);
    this.#tokens ??= new Int32Array(this.#link.length * size);
    for (let i = 0; i < size; i++) this.#tokens[page * size + i] = tokens[offset + i]!;
    const link = ++this.#lastLink;
    this.#link[page] = link;
    this.#parent[page] = parent;
    this.#key[page] = key;
    this.#sameKey[page] = this.#buckets.get(key) ?? -1;
    this.#buckets.set(key, page);
    return link;
  }

  /** A registered page lost its last holder: it becomes the most recently released parked page. */
  park(page: number): void {
    this.#parked[page] = 1;
    this.#older[page] = this.#newest;
    this.#newer[page] = -1;
    if (this.#newest >= 0) this.#newer[this.#newest] = page;
    else this.#oldest = page;
    this.#newest = page;
    this.#parkedCount++;
  }

  /** A parked page gained a holder again (a prefix hit). */
  unpark(page: number): void {
    const older = this.#older[page]!;
    const newer = this.#newer[page]!;
    if (older >= 0) this.#newer[older] = newer;
    else this.#oldest = newer;
    if (newer >= 0) this.#older[newer] = older;
    else this.#newest = older;
    this.#parked[page] = 0;
    this.#parkedCount--;
  }

  /** Unregisters the least recently released parked page and returns it (-1 if none) for reuse. */
  evict(): number {
    const page = this.#oldest;
    if (page < 0) return -1;
    this.unpark(page);
    const key = this.#key[page]!;
    let at = this.#buckets.get(key)!;
    if (at === page) {
      const next = this.#sameKey[page]!;
      if (next >= 0) this.#buckets.set(key, next);
      else this.#buckets.delete(key);
    } else {
      while (this.#sameKey[at] !== page) at = this.#sameKey[at]!;
      this.#sameKey[at] = this.#sameKey[page]!;
    }
    this.#link[page] = 0;
    return page;
  }

  /** Parked pages, least recently released first (a copy, for inspection). */
  parkedPages(): Int32Array {
    const out = new Int32Array(this.#parkedCount);
    for (let page = this.#oldest, i = 0; page >= 0; page = this.#newer[page]!) out[i++] = page;
    return out;
  }
}

/** A 53-bit hash of a link: its parent link id and `count` token ids. Lookups compare the link itself, so collisions cost time, never correctness. */
function chainKey(parent: number, tokens: ArrayLike<number>, offset: number, count: number): number {
  const lo = parent >>> 0;
  const hi = (parent / 0x100000000) >>> 0;
  let a = Math.imul(lo ^ 0x9e3779b9, 0x85ebca6b) ^ hi;
  let b = Math.imul(hi ^ 0x7f4a7c15, 0xc2b2ae35) ^ lo;
  for (let i = 0; i < count; i++) {
    const t = tokens[offset + i]! | 0;
    a = Math.imul(a ^ t, 0x01000193);
    a ^= a >>> 15;
    b = Math.imul(b + t, 0x5bd1e995);
    b ^= b >>> 13;
  }
  return (a >>> 0) * 0x200000 + ((b >>> 0) & 0x1fffff);
}
