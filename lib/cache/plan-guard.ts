// Whether a decode plan still describes its batch. A plan holds page ids and lengths as they were when it
// was made (the CUDA path has even uploaded them); once a planned sequence's pages or length change, or
// its cache is gone, running the plan would read pages that now belong to someone else, or memory that
// was freed. So the cache keeps one clock: every change to a sequence's pages, row, length or state
// stamps the sequence with the next tick, and a sequence changed after a plan iff its stamp is later
// than the plan's tick.
//
// Checking costs O(1) per run while nothing in the cache changed (one comparison with the clock), and
// O(batch) once after any change, which the guard then remembers: per-layer runs stay cheap at any batch,
// and making a guard costs one copy of the batch's array.
import { record } from "./sequence";

export class ChangeClock {
  ticks = 0;
  disposed = false;

  /** The stamp for a change made now. */
  tick(): number {
    return ++this.ticks;
  }
}

/** What the guard reads of a sequence: its id (for messages) and its record's stamp. */
interface Stamped {
  readonly id: number;
  readonly [record]: { readonly version: number; readonly change: string };
}

export class PlanGuard {
  readonly #clock: ChangeClock;
  readonly #sequences: readonly Stamped[];
  readonly #plannedAt: number;
  #checkedAt: number;

  /** `sequences`: the batch as planned (the guard keeps this array: pass a copy). */
  constructor(clock: ChangeClock, sequences: readonly Stamped[]) {
    this.#clock = clock;
    this.#sequences = sequences;
    this.#plannedAt = clock.ticks;
    this.#checkedAt = clock.ticks;
  }

  /** Why the plan no longer holds (for the StalePlanError), or null while it does. */
  staleness(): string | null {
    const clock = this.#clock;
    if (clock.disposed) return "its KV cache was disposed";
    if (clock.ticks === this.#checkedAt) return null;
    const sequences = this.#sequences;
    for (let i = 0; i < sequences.length; i++) {
      const r = sequences[i]![record];
      if (r.version > this.#plannedAt) return `sequence ${sequences[i]!.id} was ${r.change} after the plan was made`;
    }
    this.#checkedAt = clock.ticks;
    return null;
  }
}
