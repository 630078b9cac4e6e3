// Continuous batching over the paged KV cache. Each step: give every running request a slot for its
// next token (preempting the most recently admitted when pages run out), admit or resume queued
// requests in arrival order while pages allow, then hand the batch to the StepRunner (plan once, run
// every layer, sample) and await it, so the event loop runs while the GPU does; then retire.
//
// Preemption swaps the victim's pages to pinned host memory while swap space lasts; otherwise its
// pages are freed and it is re-queued, and on re-admission the K and V of its prompt and of the
// tokens it already generated are written again (recompute). Either way it resumes exactly where
// it stopped. Nothing is dropped: each request ends finished, cancelled, or failed with a typed error.
import {
  BadStateError,
  InvalidArgumentError,
  OutOfPagesError,
  OutOfRangeError,
  PkvError,
  Status,
  SwapFullError,
} from "./errors";
import { ModelOutputError, RequestTooLargeError, StepFailedError } from "./scheduler/errors";
import { type SchedulerOptions, resolveOptions } from "./scheduler/options";
import type { PoolShape, SchedulerCache, SchedulerPlan, SeqOf, Speculation, StepRunner } from "./scheduler/ports";
import { ArrivalQueue } from "./scheduler/queue";
import {
  type ActiveRequest,
  Entry,
  RequestHandle,
  type RequestSpec,
  checkSpec,
  checkTokenIds,
  failedAtSubmit,
} from "./scheduler/request";
import { addStep, emptyReport, emptyTotals, type SchedulerTotals, type StepReport } from "./scheduler/stats";
import { INT32_MAX, checkCount, show } from "./validate";

export type {
  ActiveRequest,
  FinishReason,
  Outcome,
  RequestHandle,
  RequestResult,
  RequestSpec,
  TokenEvent,
} from "./scheduler/request";
export type {
  CacheStats,
  DecodeResult,
  ModelShape,
  PoolShape,
  SchedulerCache,
  SchedulerEngine,
  Speculation,
  StepModel,
  StepRunner,
} from "./scheduler/ports";
export { LATENCY_BUCKETS_MS, LatencyHistogram, type SchedulerTotals, type StepReport } from "./scheduler/stats";
export type { HostOptions, RunnerOptions, SchedulerOptions } from "./scheduler/options";
export { HostStepRunner, type HostStepRunnerOptions } from "./scheduler/host-runner";
export { quantile } from "./scheduler/stats";
export { ModelOutputError, RequestTooLargeError, StepFailedError } from "./scheduler/errors";
export { SyntheticModel, type SyntheticShape } from "./scheduler/synthetic";

const now = () => performance.now();
const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Generic over the cache (its sequence type follows) and, on the host path, the engine's plan type. */
export class Scheduler<
  // biome-ignore lint/suspicious/noExplicitAny: any sequence type; the Scheduler never looks inside it
  C extends SchedulerCache<any> = SchedulerCache<unknown>,
  P extends SchedulerPlan = SchedulerPlan,
> {
  readonly #cache: C;
  readonly #runner: StepRunner<SeqOf<C>>;
  readonly #shape: Required<PoolShape>;
  readonly #maxBatch: number;
  readonly #swap: boolean;
  readonly #watermark: number;
  /** Chunked prefill's per-step token budget (null: off, prompts are written whole at admission). */
  readonly #maxBatchedTokens: number | null;
  /** Chunked mode: running requests whose known tokens are not all in the cache yet. */
  readonly #prefilling = new Set<Entry<SeqOf<C>>>();
  /** Chunked mode: this step's query tokens per row (decode rows 1), and the budget left. */
  readonly #chunks = new Map<Entry<SeqOf<C>>, number>();
  #budget = 0;
  /** Speculative decoding's draft source (null: off), this step's drafts per row, and the counts so far. */
  readonly #speculate: Speculation | null;
  readonly #drafts = new Map<Entry<SeqOf<C>>, number[]>();
  /** Draft tokens verified and accepted since the scheduler was made (speculate only). */
  readonly speculation = { drafted: 0, accepted: 0 };
  readonly #queue = new ArrivalQueue<Entry<SeqOf<C>>>();
  /** In admission order: the last is the next preemption victim. */
  readonly #running: Entry<SeqOf<C>>[] = [];
  readonly #byId = new Map<number, Entry<SeqOf<C>>>();
  readonly #stepListeners = new Set<(report: StepReport) => void>();
  readonly #retireListeners = new Set<(request: ActiveRequest, seq: SeqOf<C>) => void>();
  readonly totals: SchedulerTotals = emptyTotals();
  #arrivals = 0;
  #admissions = 0;
  #nextId = 0;
  #stepNo = 0;
  #loop: Promise<void> | null = null;
  /** The step in progress, while its runner works. */
  #current: Promise<StepReport> | null = null;
  /** The batch of the step in progress: cancelling one of these defers freeing its pages (see cancel). */
  #inFlight: ReadonlySet<Entry<SeqOf<C>>> = new Set();
  readonly #releaseAfterStep: Entry<SeqOf<C>>[] = [];
  #stopping = false;
  #closed = false;
  #wake: (() => void) | null = null;

  constructor(options: SchedulerOptions<C, P>) {
    const o = resolveOptions(options);
    this.#cache = o.cache;
    this.#runner = o.runner;
    this.#shape = o.shape;
    this.#maxBatch = o.maxBatch;
    this.#swap = o.swap;
    this.#watermark = o.watermark;
    this.#maxBatchedTokens = o.maxBatchedTokens;
    this.#speculate = o.speculate;
  }

  /** Steps run through decodeChunks: chunked prefill, or draft verification, or both. */
  get #chunked(): boolean {
    return this.#maxBatchedTokens !== null || this.#speculate !== null;
  }

  /** The compute of a step: the runner given, or the HostStepRunner built from the engine and model. */
  get runner(): StepRunner<SeqOf<C>> {
    return this.#runner;
  }

  get waiting(): number {
    return this.#queue.count((e) => e.state === "waiting");
  }
  get swapped(): number {
    return this.#queue.count((e) => e.state === "swapped");
  }
  get running(): number {
    return this.#running.length;
  }
  /** True while any request is queued or running. */
  get busy(): boolean {
    return this.#running.length > 0 || this.#queue.length > 0;
  }

  /**
   * Queues a request. Invalid specs throw here (InvalidArgumentError); a request that can never fit
   * the pool is still returned, with its handle already failed with RequestTooLargeError, and one whose
   * signal is already aborted with its handle already cancelled.
   */
  submit(spec: RequestSpec): RequestHandle {
    this.#checkOpen("submit");
    const { promptLength, maxTokens } = checkSpec(spec);
    const id = spec.id ?? this.#nextId;
    if (this.#byId.has(id))
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `submit: request id ${id} is already live`);
    // Sizes against the pool and the model before anything is allocated for the request (its token list
    // is O(prompt)): a request that can never run costs O(1), however long it claims to be.
    const tooLarge = this.#tooLarge(id, promptLength + maxTokens - 1);
    if (tooLarge) {
      this.#nextId = Math.max(this.#nextId, id + 1);
      this.totals.failed++;
      const handle = new RequestHandle(id, () => {});
      handle.fail(tooLarge, failedAtSubmit(id, tooLarge));
      return handle;
    }
    if (spec.prompt !== undefined) checkTokenIds(spec.prompt, this.#runner.vocab, "prompt");
    if (spec.stop !== undefined) checkTokenIds(spec.stop, this.#runner.vocab, "stop");
    this.#nextId = Math.max(this.#nextId, id + 1);
    const entry = new Entry<SeqOf<C>>(id, this.#arrivals++, spec, (i) => this.cancel(i));
    this.#byId.set(id, entry);
    this.#queue.insert(entry);
    if (spec.signal?.aborted) this.cancel(id);
    else this.#wake?.();
    return entry.handle;
  }

  /** The error for a request of `context` tokens (at its end) that could never run, or null. */
  #tooLarge(id: number, context: number): RequestTooLargeError | null {
    const pages = Math.ceil(context / this.#shape.pageSize);
    const limit = Math.min(this.#shape.numPages, this.#shape.maxPagesPerSequence);
    if (pages > limit)
      return new RequestTooLargeError(
        `request ${id} needs ${pages} pages (${context} tokens of context) but a sequence can hold at most ${limit}: too long for the pool`,
      );
    const maxContext = this.#runner.maxContext;
    if (maxContext !== undefined && context > maxContext)
      return new RequestTooLargeError(
        `request ${id} reaches ${context} tokens of context; the model takes at most ${maxContext}`,
      );
    return null;
  }

  /**
   * Stops a request wherever it is and frees its pages. Unknown or ended ids are ignored. A request in
   * the step now running ends at once, but its pages are freed when the step is done: the runner may
   * still be writing its K/V into them.
   */
  cancel(id: number): void {
    checkCount("cancel", "id", id);
    const entry = this.#byId.get(id);
    if (!entry?.live) return;
    if (entry.state === "running") this.#running.splice(this.#running.indexOf(entry), 1);
    else this.#queue.remove(entry);
    if (this.#inFlight.has(entry)) this.#releaseAfterStep.push(entry);
    else this.#releaseSeq(entry);
    entry.state = "cancelled";
    this.#byId.delete(id);
    this.totals.cancelled++;
    entry.settle("cancelled");
  }

  /** Listens to every step's report; returns the unsubscribe function. */
  onStep(listener: (report: StepReport) => void): () => void {
    checkListener("onStep", listener);
    this.#stepListeners.add(listener);
    return () => this.#stepListeners.delete(listener);
  }

  /** Called for each finished request just before its pages are released (tests read its K/V here). */
  onRetire(listener: (request: ActiveRequest, seq: SeqOf<C>) => void): () => void {
    checkListener("onRetire", listener);
    this.#retireListeners.add(listener);
    return () => this.#retireListeners.delete(listener);
  }

  /**
   * Runs one step: admission, decode of every running request, retirement. The runner's work is
   * awaited, so timers, HTTP handlers, submits and cancels run meanwhile; one step at a time.
   */
  step(): Promise<StepReport> {
    if (this.#closed) return Promise.reject(this.#closedError("step"));
    if (this.#current)
      return Promise.reject(new BadStateError(Status.BAD_STATE, "step: a step is already running; await it first"));
    const current = this.#step().finally(() => {
      this.#current = null;
    });
    this.#current = current;
    return current;
  }

  async #step(): Promise<StepReport> {
    const start = now();
    const r = emptyReport(this.#stepNo++);
    this.#budget = this.#maxBatchedTokens ?? INT32_MAX;
    this.#reserveRunning(r);
    if (this.#maxBatchedTokens !== null) this.#reserveChunks();
    if (r.preemptedBySwap + r.preemptedByRecompute === 0) this.#admit(r);
    // In chunked mode a prefilling request whose chunk did not fit the budget sits this step out.
    const batch = this.#running.filter((e) => this.#slots.has(e));
    if (batch.length > 0) await this.#decode(batch, r);
    const s = this.#cache.stats();
    Object.assign(r, {
      timeMs: now() - start,
      waiting: this.waiting,
      swapped: this.swapped,
      running: this.#running.length,
      pagesUsed: s.pagesUsed,
      pagesTotal: s.pagesTotal,
      kvUtilisation: s.pagesTotal > 0 ? s.pagesUsed / s.pagesTotal : 0,
      pagesShared: s.pagesShared,
      pagesCached: s.pagesCached,
      pagesSwapped: s.pagesSwapped,
      wasteFraction: s.wasteFraction,
    });
    addStep(this.totals, r);
    for (const listener of this.#stepListeners) notify(listener, r);
    return r;
  }

  /**
   * Steps until stopped, yielding to the event loop between steps (so HTTP handlers, cancels and new
   * submits run) and sleeping while there is no work. With `untilIdle`, returns once nothing is left.
   */
  run(options: { untilIdle?: boolean } = {}): Promise<void> {
    if (this.#closed) return Promise.reject(this.#closedError("run"));
    if (this.#loop) return this.#loop;
    this.#stopping = false;
    this.#loop = (async () => {
      try {
        while (!this.#stopping) {
          if (!this.busy) {
            if (options.untilIdle) return;
            await new Promise<void>((resolve) => (this.#wake = resolve));
            this.#wake = null;
            continue;
          }
          if (this.#current) {
            // A step the caller started (step() beside run()): wait for it rather than refuse to step.
            await this.#current.catch(() => {});
            continue;
          }
          try {
            await this.step();
          } catch (error) {
            // step() contains failures per request; anything escaping it means no request can trust the
            // state, so each one gets the error rather than the loop dying with them silently waiting.
            this.#failAll(error);
          }
          await yieldToEventLoop();
        }
      } finally {
        this.#loop = null;
      }
    })();
    return this.#loop;
  }

  /** Ends run() after the current step; queued requests stay queued. */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#wake?.();
    await this.#loop;
  }

  /** Cancels everything live, stops the loop and waits for the step in progress; submit, step and run are refused after. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const id of [...this.#byId.keys()]) this.cancel(id);
    await this.stop();
    await this.#current?.catch(() => {}); // its failure went to its requests, all cancelled now
  }

  /** `await using scheduler = new Scheduler(...)`: close(). The cache, engine and a given runner stay the caller's. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #closedError(method: string): BadStateError {
    return new BadStateError(Status.BAD_STATE, `${method}: the scheduler is closed`);
  }

  #checkOpen(method: string): void {
    if (this.#closed) throw this.#closedError(method);
  }

  // ---- phases of a step ----------------------------------------------------------------------

  /** A slot for every running request's next token, oldest first; the newest are preempted for pages. */
  #reserveRunning(r: StepReport): void {
    for (let i = 0; i < this.#running.length; ) {
      const entry = this.#running[i]!;
      if (this.#prefilling.has(entry)) {
        i++; // its chunk comes after every decode row's slot (#reserveChunks)
        continue;
      }
      try {
        const drafts = this.#speculate ? this.#draftsOf(entry) : [];
        this.#slots.set(entry, this.#appendNext(entry, drafts));
        this.#chunks.set(entry, 1 + drafts.length);
        if (drafts.length > 0) this.#drafts.set(entry, drafts);
        this.#budget -= 1 + drafts.length;
        i++;
      } catch (error) {
        if (!(error instanceof OutOfPagesError)) {
          this.#running.splice(i, 1);
          this.#fail(entry, error, r);
          continue;
        }
        // The victim is the newest, so never one whose slot is already reserved (those precede i).
        this.#preempt(this.#running.pop()!, r);
      }
    }
  }

  /** Admits or resumes queued requests in arrival order while pages and the batch limit allow. */
  #admit(r: StepReport): void {
    while (this.#running.length < this.#maxBatch) {
      const entry = this.#queue.head;
      if (!entry) return;
      let ok: boolean;
      try {
        ok =
          entry.state === "swapped"
            ? this.#resume(entry, r)
            : this.#maxBatchedTokens !== null
              ? this.#startChunked(entry, r)
              : this.#start(entry, r);
      } catch (error) {
        this.#queue.shift();
        this.#fail(entry, error, r);
        continue;
      }
      if (!ok && this.#running.length === 0) {
        // Nothing runs, so nothing will free pages for it: pages are held outside the scheduler (or by
        // shared prefixes of swapped requests). Waiting would stall every request behind it.
        this.#queue.shift();
        const s = this.#cache.stats();
        const why = `${s.pagesFree} pages free, ${s.pagesCached} cached, ${s.pagesUsed} held`;
        this.#fail(
          entry,
          new OutOfPagesError(
            Status.OUT_OF_PAGES,
            `request ${entry.id} does not fit even with nothing running (${why})`,
          ),
          r,
        );
        continue;
      }
      if (!ok) return; // FCFS: nothing overtakes the head
      this.#queue.shift();
      entry.state = "running";
      entry.admittedAt = ++this.#admissions;
      this.#running.push(entry);
    }
  }

  /** Swaps a preempted request back in and reserves its next slot; false (and no change) if no room. */
  #resume(entry: Entry<SeqOf<C>>, r: StepReport): boolean {
    if (this.#maxBatchedTokens !== null && this.#budget <= 0) return false;
    const need = pagesFor(entry.contextLength + 1, this.#shape.pageSize);
    if (!this.#roomFor(need)) return false;
    try {
      this.#cache.swapIn(entry.seq!);
    } catch (error) {
      if (this.#notNow(error)) return false;
      throw error;
    }
    try {
      this.#slots.set(entry, this.#appendNext(entry));
    } catch (error) {
      if (!(error instanceof OutOfPagesError)) throw error;
      this.#cache.swapOut(entry.seq!); // its swap slots were freed by swapIn, so they are there again
      return false;
    }
    r.swapIns++;
    this.#chunks.set(entry, 1);
    this.#budget--;
    return true;
  }

  /**
   * Creates a sequence for a waiting request (new, or preempted for recompute), reusing prefix-cache
   * pages, writes the K and V of every context token but the last, and reserves the last one's slot:
   * it is this step's query. False (and the sequence released) if the pages are not there.
   */
  #start(entry: Entry<SeqOf<C>>, r: StepReport): boolean {
    const length = entry.tokens.length; // prompt + generated so far
    const context = entry.tokens.slice(0, length - 1);
    let seq: SeqOf<C>;
    try {
      seq = entry.knownTokens ? this.#cache.createSequence({ tokens: context }) : this.#cache.createSequence();
    } catch (error) {
      if (this.#notNow(error)) return false;
      throw error;
    }
    const hit = prefixHit(seq);
    const need = pagesFor(length, this.#shape.pageSize) - Math.floor(hit / this.#shape.pageSize);
    if (!this.#roomFor(need)) {
      this.#cache.release(seq);
      return false;
    }
    let slots: Int32Array;
    try {
      slots = this.#cache.append(seq, entry.knownTokens ? entry.tokens.slice(hit, length) : length - hit);
    } catch (error) {
      this.#cache.release(seq);
      if (error instanceof OutOfPagesError) return false;
      throw error;
    }
    entry.seq = seq;
    if (length - 1 > hit) this.#runner.prefill(entry, seq, slots.subarray(0, slots.length - 1), hit, length - 1);
    entry.contextLength = length - 1;
    this.#slots.set(entry, slots.subarray(slots.length - 1));
    this.#chunks.set(entry, 1);
    this.#budget--;
    entry.prefixHitTokens += hit;
    r.prefixHitTokens += hit;
    r.prefillTokens += length - 1 - hit;
    if (entry.preemptions === 0) r.admitted++;
    return true;
  }

  /**
   * Chunked mode: the next chunk of each prefilling request, oldest first, while the step's token budget
   * lasts. A chunk that finds no pages waits for a later step (decode rows are never preempted for it).
   */
  #reserveChunks(): void {
    for (const entry of this.#running) {
      if (!this.#prefilling.has(entry) || this.#budget <= 0) continue;
      const n = Math.min(entry.tokens.length - entry.contextLength, this.#budget);
      try {
        this.#reserveChunk(entry, n);
      } catch (error) {
        if (!(error instanceof OutOfPagesError)) throw error;
      }
    }
  }

  /** Appends tokens contextLength .. contextLength + n of a prefilling request as this step's chunk. */
  #reserveChunk(entry: Entry<SeqOf<C>>, n: number): void {
    const from = entry.contextLength;
    const slots = this.#cache.append(entry.seq!, entry.knownTokens ? entry.tokens.slice(from, from + n) : n);
    this.#slots.set(entry, slots);
    this.#chunks.set(entry, n);
    this.#budget -= n;
  }

  /**
   * Chunked mode's admission: a sequence (with its prefix-cache hit) and its first chunk, as much of the
   * rest of its known tokens as the budget leaves; the chunk's attention runs in this step with the
   * decode rows. False (and the sequence released) without budget or pages.
   */
  #startChunked(entry: Entry<SeqOf<C>>, r: StepReport): boolean {
    if (this.#budget <= 0) return false;
    const length = entry.tokens.length;
    let seq: SeqOf<C>;
    try {
      seq = entry.knownTokens
        ? this.#cache.createSequence({ tokens: entry.tokens.slice(0, length - 1) })
        : this.#cache.createSequence();
    } catch (error) {
      if (this.#notNow(error)) return false;
      throw error;
    }
    const hit = prefixHit(seq);
    const n = Math.min(length - hit, this.#budget);
    const need = pagesFor(hit + n, this.#shape.pageSize) - Math.floor(hit / this.#shape.pageSize);
    if (!this.#roomFor(need)) {
      this.#cache.release(seq);
      return false;
    }
    entry.seq = seq;
    entry.contextLength = hit;
    try {
      this.#reserveChunk(entry, n);
    } catch (error) {
      entry.seq = null;
      entry.contextLength = 0;
      this.#cache.release(seq);
      if (error instanceof OutOfPagesError) return false;
      throw error;
    }
    this.#prefilling.add(entry);
    entry.prefixHitTokens += hit;
    r.prefixHitTokens += hit;
    if (entry.preemptions === 0) r.admitted++;
    return true;
  }

  /** One decode step of the batch through the runner (plan once, every layer, sample), then its tokens. */
  async #decode(batch: Entry<SeqOf<C>>[], r: StepReport): Promise<void> {
    const n = batch.length;
    const chunked = this.#chunked;
    const everyToken = this.#speculate !== null;
    const drafts = new Map(this.#drafts);
    this.#drafts.clear();
    const queryLengths = new Int32Array(n);
    for (let i = 0; i < n; i++) queryLengths[i] = chunked ? this.#chunks.get(batch[i]!)! : 1;
    const slots = new Int32Array(queryLengths.reduce((a, b) => a + b, 0));
    for (let i = 0, at = 0; i < n; at += queryLengths[i]!, i++)
      slots.set(this.#slots.get(batch[i]!)!.subarray(0, queryLengths[i]!), at);
    this.#slots.clear();
    this.#chunks.clear();
    this.#inFlight = new Set(batch);
    try {
      const sequences = batch.map((e) => e.seq!);
      const result = chunked
        ? await this.#runner.decodeChunks!(batch, sequences, queryLengths, slots, {
            everyToken,
            drafts: everyToken ? batch.map((e) => drafts.get(e)) : undefined,
          })
        : await this.#runner.decode(batch, sequences, slots);
      r.planMs = result.planMs;
      r.kernel = result.kernel;
      // Checked whole before any request takes a token: a bad sample fails the step, never one request half-way.
      const tokens = checkSampled(result.tokens, everyToken ? slots.length : n, this.#runner.vocab);
      r.batch = n;
      const at = now(); // every row's token reaches its client now
      for (let i = 0, query = 0; i < n; query += queryLengths[i]!, i++) {
        const entry = batch[i]!;
        const row = everyToken ? Array.prototype.slice.call(tokens, query, query + queryLengths[i]!) : [tokens[i]!];
        r.contextTokens += entry.contextLength + queryLengths[i]!;
        if (entry.state !== "running") continue; // cancelled while the step ran
        if (this.#prefilling.has(entry)) {
          // A chunk: its tokens' K/V are in the cache now; the one that reaches the last known token
          // is that token's decode, whose sample is the request's next token.
          const reached = entry.contextLength + queryLengths[i]!;
          r.prefillTokens += queryLengths[i]! - (reached === entry.tokens.length ? 1 : 0);
          if (reached < entry.tokens.length) {
            entry.contextLength = reached;
            continue;
          }
          this.#prefilling.delete(entry);
          entry.contextLength = reached - 1;
        }
        const verified = drafts.get(entry);
        if (verified) {
          const end = this.#acceptDrafts(entry, verified, row, at, r);
          if (end) this.#finish(entry, end, r);
          continue;
        }
        const first = entry.generated === 0;
        const end = entry.take(row.at(-1)!, r.step, at);
        if (first) r.ttftMs.push(entry.ttftMs!);
        else r.itlMs.push(entry.itlMs.at(-1)!);
        if (end) this.#finish(entry, end, r);
      }
    } catch (error) {
      // The step's K/V may be half written: every request in it fails rather than continue on bad data,
      // and all of them, and the step's report, get the same typed error.
      const failure =
        error instanceof PkvError
          ? error
          : new StepFailedError(`step ${r.step} failed: ${String(error)}`, { cause: error });
      r.error = failure;
      for (const entry of batch) {
        if (entry.state !== "running") continue;
        this.#running.splice(this.#running.indexOf(entry), 1);
        this.#fail(entry, failure, r);
      }
    } finally {
      this.#inFlight = new Set();
      for (const entry of this.#releaseAfterStep.splice(0)) this.#releaseSeq(entry);
    }
  }

  // ---- state changes -------------------------------------------------------------------------

  readonly #slots = new Map<Entry<SeqOf<C>>, Int32Array>();

  /** The slot of a running request's next token, and its drafts' after it (without pages for them: none). */
  #appendNext(entry: Entry<SeqOf<C>>, drafts: number[] = []): Int32Array {
    const token = entry.tokens[entry.contextLength]!;
    if (drafts.length > 0) {
      try {
        return this.#cache.append(entry.seq!, entry.knownTokens ? [token, ...drafts] : 1 + drafts.length);
      } catch (error) {
        if (!(error instanceof OutOfPagesError)) throw error;
        drafts.length = 0; // no room to verify: a plain decode row this step
      }
    }
    return this.#cache.append(entry.seq!, entry.knownTokens ? [token] : 1);
  }

  /** Up to the draft source's count of guesses for a decode row, within its tokens left and the budget. */
  #draftsOf(entry: Entry<SeqOf<C>>): number[] {
    const count = Math.min(this.#speculate!.maxDraftTokens, entry.maxTokens - entry.generated - 1, this.#budget - 1);
    if (count <= 0) return [];
    const given = this.#speculate!.draft(entry, count);
    const length = (given as { length?: unknown } | null)?.length;
    if (typeof given !== "object" || given === null || typeof length !== "number")
      throw new ModelOutputError(`speculate.draft returned ${show(given)}, not an array of token ids`);
    const drafts = Array.from(given).slice(0, count);
    checkSampled(drafts, drafts.length, this.#runner.vocab);
    return drafts;
  }

  /**
   * A verified row: its drafts up to the first the model disagrees with are accepted, with the model's
   * token after them; the rejected drafts' K/V are rolled back first. Returns why the request ends, if it does.
   */
  #acceptDrafts(entry: Entry<SeqOf<C>>, drafts: number[], sampled: ArrayLike<number>, at: number, r: StepReport) {
    let accepted = 0;
    while (accepted < drafts.length && drafts[accepted] === sampled[accepted]) accepted++;
    this.speculation.drafted += drafts.length;
    this.speculation.accepted += accepted;
    this.#cache.truncate!(entry.seq!, entry.contextLength + 1 + accepted);
    let end: "stop" | "length" | null = null;
    for (let j = 0; j <= accepted && end === null; j++) {
      const first = entry.generated === 0;
      end = entry.take(sampled[j]!, r.step, at);
      if (first) r.ttftMs.push(entry.ttftMs!);
      else r.itlMs.push(entry.itlMs.at(-1)!);
    }
    return end;
  }

  #preempt(victim: Entry<SeqOf<C>>, r: StepReport): void {
    victim.preemptions++;
    let swapped = false;
    if (this.#swap && !this.#prefilling.has(victim)) {
      try {
        this.#cache.swapOut(victim.seq!);
        swapped = true;
      } catch (error) {
        // Swap full: recompute instead. Anything else is the victim's own failure.
        if (!(error instanceof SwapFullError)) return this.#fail(victim, error, r);
      }
    }
    if (swapped) {
      victim.state = "swapped";
      victim.swaps++;
      r.preemptedBySwap++;
    } else {
      this.#releaseSeq(victim);
      victim.contextLength = 0;
      victim.state = "waiting";
      r.preemptedByRecompute++;
    }
    this.#queue.insert(victim);
  }

  #finish(entry: Entry<SeqOf<C>>, reason: "length" | "stop", r: StepReport): void {
    this.#running.splice(this.#running.indexOf(entry), 1);
    for (const listener of this.#retireListeners) notify(() => listener(entry, entry.seq!), undefined);
    this.#releaseSeq(entry);
    entry.state = "finished";
    this.#byId.delete(entry.id);
    r.finished++;
    if (reason === "stop") r.stopped++;
    entry.settle(reason);
  }

  #fail(entry: Entry<SeqOf<C>>, error: unknown, r: StepReport): void {
    try {
      this.#releaseSeq(entry, true);
    } catch {
      // The original error is the one worth delivering; the sequence is gone either way.
    }
    entry.state = "failed";
    this.#byId.delete(entry.id);
    this.#slots.delete(entry);
    r.failed++;
    const delivered =
      error instanceof PkvError
        ? error
        : new StepFailedError(`step ${r.step} failed for request ${entry.id}: ${String(error)}`, { cause: error });
    entry.settle("error", delivered);
  }

  /**
   * Frees a request's sequence. After a failure its last K/V writes may be incomplete: `discard`, where
   * the cache has it, keeps those pages out of the prefix cache, where another request could hit them.
   */
  #releaseSeq(entry: Entry<SeqOf<C>>, failed = false): void {
    const seq = entry.seq;
    entry.seq = null;
    this.#slots.delete(entry);
    this.#chunks.delete(entry);
    this.#prefilling.delete(entry);
    this.#drafts.delete(entry);
    if (seq === null) return;
    if (failed && this.#cache.discard) this.#cache.discard(seq);
    else this.#cache.release(seq);
  }

  #failAll(error: unknown): void {
    const r = emptyReport(this.#stepNo - 1); // the step that threw
    for (const entry of [...this.#running, ...this.#queue]) {
      if (entry.state === "running") this.#running.splice(this.#running.indexOf(entry), 1);
      else this.#queue.remove(entry);
      this.#fail(entry, error, r);
    }
    this.totals.failed += r.failed;
  }

  /** Errors that mean "no room yet": out of pages, or (while others run and will leave) no free row. */
  #notNow(error: unknown): boolean {
    return error instanceof OutOfPagesError || (error instanceof OutOfRangeError && this.#running.length > 0);
  }

  /** Whether `need` more pages fit, keeping the watermark free while others run. */
  #roomFor(need: number): boolean {
    if (this.#running.length === 0) return true; // alone: try, the cache evicts cached prefixes first
    const s = this.#cache.stats();
    return s.pagesFree + s.pagesCached - need >= this.#watermark; // cached prefix pages are evictable
  }
}

/** A listener's bug is logged, never turned into a failure of the requests or the loop. */
function notify<T>(listener: (value: T) => void, value: T): void {
  try {
    listener(value);
  } catch (error) {
    console.error("persistentkv Scheduler: a listener threw:", error);
  }
}

function pagesFor(tokens: number, pageSize: number): number {
  return Math.ceil(tokens / pageSize);
}

function prefixHit(seq: unknown): number {
  const hit = (seq as { prefixHitTokens?: number }).prefixHitTokens;
  return typeof hit === "number" ? hit : 0;
}

function checkListener(method: string, listener: unknown): void {
  if (typeof listener !== "function")
    throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `${method}: listener ${show(listener)} is not a function`);
}

/** sample()'s result, if it is one token id per row; else the ModelOutputError that fails the step. */
function checkSampled(tokens: ArrayLike<number>, rows: number, vocab = INT32_MAX + 1): ArrayLike<number> {
  const length = (tokens as { length?: unknown } | null | undefined)?.length;
  if (typeof tokens !== "object" || tokens === null || typeof length !== "number")
    throw new ModelOutputError(`model.sample returned ${show(tokens)}, not an array of ${rows} token ids`);
  if (length !== rows) throw new ModelOutputError(`model.sample returned ${length} tokens for a batch of ${rows}`);
  const limit = Math.min(vocab, INT32_MAX + 1);
  for (let i = 0; i < rows; i++) {
    const t = tokens[i];
    if (typeof t !== "number" || !Number.isInteger(t) || t < 0 || t >= limit)
      throw new ModelOutputError(
        `model.sample returned ${show(t)} for row ${i}, not a token id (integer 0..${limit - 1})`,
      );
  }
  return tokens;
}
