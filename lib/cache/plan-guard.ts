// Whether a decode plan still describes its batch. A plan holds page ids and lengths as they were when it
// was made (the CUDA path has even uploaded them); once a planned sequence's pages or length change, or
// its cache is gone, running the plan would read pages that now belong to someone else, or memory that
// was freed. So the cache keeps one clock: every change to a sequence's pages, row, length or state
// stamps the sequence with the next tick, and a plan remembers each sequence's stamp.
//
// Checking costs O(1) per run while nothing in the cache changed (one comparison with the clock), and
// O(batch) once after any change, which the guard then remembers: per-layer runs stay cheap at any batch.
import type { SequenceRecord } from "./sequence";

export class ChangeClock {
  ticks = 0;
  disposed = false;

  /** The stamp for a change made now. */
  tick(): number {
    return ++this.ticks;
  }
}

export class PlanGuard {
  readonly #clock: ChangeClock;
  readonly #records: SequenceRecord[];
  readonly #ids: number[];
  readonly #versions: Float64Array;
  #checkedAt: number;

  constructor(clock: ChangeClock, records: SequenceRecord[], ids: number[]) {
    this.#clock = clock;
    this.#records = records;
    this.#ids = ids;
    this.#versions = Float64Array.from(records, (r) => r.version);
    this.#checkedAt = clock.ticks;
  }

  /** Why the plan no longer holds (for the StalePlanError), or null while it does. */
  staleness(): string | null {
    const clock = this.#clock;
    if (clock.disposed) return "its KV cache was disposed";
    if (clock.ticks === this.#checkedAt) return null;
    const records = this.#records;
    for (let i = 0; i < records.length; i++) {
      const r = records[i]!;
      if (r.version !== this.#versions[i]) return `sequence ${this.#ids[i]} was ${r.change} after the plan was made`;
    }
    this.#checkedAt = clock.ticks;
    return null;
  }
}
