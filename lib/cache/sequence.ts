// A sequence: one request's context in the cache. The handle users hold is read-only; the cache keeps
// the mutable bookkeeping in a record behind a symbol that lib/index.ts does not export.
export type SequenceState = "live" | "swapped" | "released";

export const record = Symbol("pkv.sequence");

export interface SequenceRecord {
  /** The cache that made the sequence (checked on every use). */
  readonly owner: object;
  state: SequenceState;
  /** Block-table row while live; -1 while swapped out or released. */
  row: number;
  /** Tokens reserved by append (the last page may be partial). */
  length: number;
  /** Tokens found in the prefix cache when the sequence was created. */
  prefixHitTokens: number;
  // The prefix-cache chain. `hashing` holds while every token so far came with its id; then pages
  // [0, registered) are registered (or found), `link` is the id of page registered-1's link, and
  // `tail` holds the ids of tokens from registered * pageSize to length.
  hashing: boolean;
  registered: number;
  link: number;
  tail: Int32Array;
  /** While swapped out: per page, a resident page id (shared pages stay) or -(swap slot + 1). */
  swapMap: Int32Array | null;
  /** The cache's clock tick of the last change to pages, row, length or state (plans compare it). */
  version: number;
  /** What that change was ("appended to", "released", ...), for the stale plan's message. */
  change: string;
}

let nextId = 1;

export class Sequence {
  /** Unique within the process, for logs. */
  readonly id: number;
  declare readonly [record]: SequenceRecord;

  constructor(rec: SequenceRecord) {
    this.id = nextId++;
    // Not enumerable: printing a sequence shows its id, not the whole cache behind it.
    Object.defineProperty(this, record, { value: rec, enumerable: false });
  }

  get state(): SequenceState {
    return this[record].state;
  }
  /** Tokens in the context. */
  get length(): number {
    return this[record].length;
  }
  /** Leading tokens that createSequence found in the prefix cache (already holding K and V). */
  get prefixHitTokens(): number {
    return this[record].prefixHitTokens;
  }
  /** The block-table row the decode plan reads (-1 unless live). */
  get row(): number {
    return this[record].row;
  }
}
