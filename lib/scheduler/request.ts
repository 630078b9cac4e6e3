// A request's life in the scheduler, and the handle its submitter holds: an async iterator of the
// tokens it generates, a promise of its outcome, and cancel(). A request ends by reaching maxTokens
// ("length"), by generating one of its stop tokens ("stop"), by cancel() or its AbortSignal
// ("cancelled"), or with a typed error ("error"); its time to first token and the gaps between its
// tokens are measured from submit, as its client sees them.
import { BadStateError, InvalidArgumentError, Status } from "../errors";
import { INT32_MAX, checkCount, show } from "../validate";

export interface RequestSpec {
  /** Prompt token ids. Ids let the prefix cache share pages between requests with the same prefix. */
  prompt?: ArrayLike<number>;
  /** Or only a length: content unknown to the cache, so it never shares pages. */
  promptLength?: number;
  /** Tokens to generate: one per decode step. */
  maxTokens: number;
  /** Caller's id (default: the next free number); synthetic models derive activations from it. */
  id?: number;
  /** Token ids that end the request when generated (it is delivered, as the last token): "stop". */
  stop?: ArrayLike<number>;
  /** Aborting it cancels the request, wherever it is (a disconnected client, a timeout). */
  signal?: AbortSignal;
}

/** What the model callbacks see of a request. */
export interface ActiveRequest {
  readonly id: number;
  /** Prompt then generated ids; -1 for a prompt given only by length. */
  readonly tokens: readonly number[];
  readonly promptLength: number;
  readonly generated: number;
  /** Tokens whose K and V are in the cache. */
  readonly contextLength: number;
}

export interface TokenEvent {
  /** 0-based index among the request's generated tokens. */
  index: number;
  token: number;
  /** Position of the token in the request's sequence. */
  position: number;
  /** The scheduler step that produced it. */
  step: number;
}

/** Why a request ended: maxTokens reached, a stop token generated, cancelled (or aborted), or failed. */
export type FinishReason = "length" | "stop" | "cancelled" | "error";
/** "finished" covers "length" and "stop". */
export type Outcome = "finished" | "cancelled" | "failed";
export interface RequestResult {
  id: number;
  outcome: Outcome;
  finishReason: FinishReason;
  tokens: number[];
  preemptions: number;
  swaps: number;
  prefixHitTokens: number;
  /** Milliseconds from submit to the first token (null if none came). */
  ttftMs: number | null;
  /** Milliseconds between consecutive tokens: tokens.length - 1 of them (a preemption shows as a long one). */
  itlMs: number[];
  /** Milliseconds from submit to the end. */
  latencyMs: number;
  /** The typed error, when finishReason is "error" (only `settled` delivers such a result). */
  error?: Error;
}

export type RequestState = "waiting" | "running" | "swapped" | "finished" | "cancelled" | "failed";

/** Scheduler-side state of one request. Sequence type is the cache's; the scheduler never looks inside. */
export class Entry<Seq> implements ActiveRequest {
  readonly id: number;
  readonly arrival: number;
  readonly tokens: number[];
  readonly promptLength: number;
  readonly maxTokens: number;
  readonly knownTokens: boolean;
  readonly handle: RequestHandle;
  readonly stop: ReadonlySet<number> | null;
  readonly submittedAt = performance.now();
  readonly itlMs: number[] = [];
  ttftMs: number | null = null;
  #lastTokenAt = 0;
  #unlisten: (() => void) | null = null;
  state: RequestState = "waiting";
  seq: Seq | null = null;
  generated = 0;
  contextLength = 0;
  admittedAt = 0;
  preemptions = 0;
  swaps = 0;
  prefixHitTokens = 0;

  constructor(id: number, arrival: number, spec: RequestSpec, cancel: (id: number) => void) {
    this.id = id;
    this.arrival = arrival;
    this.maxTokens = spec.maxTokens;
    this.knownTokens = spec.prompt !== undefined;
    this.tokens = spec.prompt !== undefined ? Array.from(spec.prompt) : new Array<number>(spec.promptLength!).fill(-1);
    this.promptLength = this.tokens.length;
    this.stop = spec.stop !== undefined && spec.stop.length > 0 ? new Set(Array.from(spec.stop)) : null;
    this.handle = new RequestHandle(id, () => cancel(id));
    const signal = spec.signal;
    if (signal) {
      const onAbort = () => cancel(id);
      signal.addEventListener("abort", onAbort, { once: true });
      this.#unlisten = () => signal.removeEventListener("abort", onAbort);
    }
  }

  get live(): boolean {
    return this.state === "waiting" || this.state === "running" || this.state === "swapped";
  }

  /** Takes a generated token at time `at` (one clock reading per step); says why it ends the request, if it does. */
  take(token: number, step: number, at: number): "stop" | "length" | null {
    if (this.generated === 0) this.ttftMs = at - this.submittedAt;
    else this.itlMs.push(at - this.#lastTokenAt);
    this.#lastTokenAt = at;
    this.contextLength++;
    this.tokens.push(token);
    this.generated++;
    this.handle.push({ index: this.generated - 1, token, position: this.contextLength, step });
    if (this.stop?.has(token)) return "stop";
    return this.generated === this.maxTokens ? "length" : null;
  }

  /** Delivers the end: the handle's iterator ends and `done` resolves (or rejects, for "error"). */
  settle(finishReason: FinishReason, error?: Error): void {
    this.#unlisten?.();
    this.#unlisten = null;
    const result = this.result(finishReason, error);
    if (error) this.handle.fail(error, result);
    else this.handle.end(result);
  }

  result(finishReason: FinishReason, error?: Error): RequestResult {
    const { id, preemptions, swaps, prefixHitTokens, ttftMs } = this;
    const outcome = OUTCOMES[finishReason];
    return {
      id,
      outcome,
      finishReason,
      tokens: this.tokens.slice(this.promptLength),
      preemptions,
      swaps,
      prefixHitTokens,
      ttftMs,
      itlMs: this.itlMs.slice(),
      latencyMs: performance.now() - this.submittedAt,
      ...(error ? { error } : {}),
    };
  }
}

const OUTCOMES: Record<FinishReason, Outcome> = {
  length: "finished",
  stop: "finished",
  cancelled: "cancelled",
  error: "failed",
};

/** The result of a request that failed at submit, before it was queued. */
export function failedAtSubmit(id: number, error: Error): RequestResult {
  return {
    id,
    outcome: "failed",
    finishReason: "error",
    tokens: [],
    preemptions: 0,
    swaps: 0,
    prefixHitTokens: 0,
    ttftMs: null,
    itlMs: [],
    latencyMs: 0,
    error,
  };
}

/**
 * Checks a spec's shape and sizes before anything is allocated for it (the error goes to the submitter,
 * not the loop), and returns its sizes so the caller can check them against the pool and the model. The
 * prompt's ids are checked afterwards by checkPromptIds: that is O(prompt).
 */
export function checkSpec(spec: RequestSpec): { promptLength: number; maxTokens: number } {
  const bad = (message: string) => new InvalidArgumentError(Status.INVALID_ARGUMENT, message);
  if (typeof spec !== "object" || spec === null) throw bad("submit: request must be an object");
  if ((spec.prompt === undefined) === (spec.promptLength === undefined))
    throw bad("submit: request needs exactly one of prompt (token ids) or promptLength");
  let promptLength: number;
  if (spec.prompt !== undefined) {
    if (typeof spec.prompt !== "object" || spec.prompt === null || typeof spec.prompt.length !== "number")
      throw bad("submit: prompt must be an array of token ids");
    promptLength = checkCount("submit", "prompt length", spec.prompt.length, 1);
  } else promptLength = checkCount("submit", "promptLength", spec.promptLength, 1);
  const maxTokens = checkCount("submit", "maxTokens", spec.maxTokens, 1);
  if (spec.id !== undefined) checkCount("submit", "id", spec.id);
  if (
    spec.stop !== undefined &&
    (typeof spec.stop !== "object" || spec.stop === null || typeof spec.stop.length !== "number")
  )
    throw bad(`submit: stop ${show(spec.stop)} must be an array of token ids`);
  if (spec.signal !== undefined && !(spec.signal instanceof AbortSignal))
    throw bad(`submit: signal ${show(spec.signal)} is not an AbortSignal`);
  return { promptLength, maxTokens };
}

/** Every id an integer in 0..min(vocab, 2^31)-1; `name` says which list (prompt, stop) in the message. */
export function checkTokenIds(ids: ArrayLike<number>, vocab = INT32_MAX + 1, name = "prompt"): void {
  for (let i = 0; i < ids.length; i++) {
    const t = ids[i];
    if (!Number.isInteger(t) || t! < 0 || t! >= vocab || t! > INT32_MAX)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `submit: ${name}[${i}] = ${show(t)} is not a token id (integer 0..${Math.min(vocab, INT32_MAX + 1) - 1})`,
      );
  }
}

/**
 * The submitter's side: `for await (const t of handle)` streams tokens (single consumer); `done`
 * resolves with the outcome or rejects with the typed error the request failed with.
 */
export class RequestHandle implements AsyncIterable<TokenEvent> {
  readonly id: number;
  readonly done: Promise<RequestResult>;
  readonly #cancel: () => void;
  readonly #buffered: TokenEvent[] = [];
  #waiter: (() => void) | null = null;
  #ended = false;
  #error: Error | null = null;
  #finishReason: FinishReason | null = null;
  #resolve!: (result: RequestResult) => void;
  #reject!: (error: Error) => void;
  #settle!: (result: RequestResult) => void;
  #iterating = false;
  /** Resolves once the request ends, however it ends: a failure is a result with finishReason "error". */
  readonly settled: Promise<RequestResult>;

  constructor(id: number, cancel: () => void) {
    this.id = id;
    this.#cancel = cancel;
    this.done = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.settled = new Promise((resolve) => (this.#settle = resolve));
    // A submitter that only iterates still sees the error there; this keeps `done` from being unhandled.
    this.done.catch(() => {});
  }

  /** The typed error the request failed with, once it has (submit may return a handle already failed). */
  get error(): Error | null {
    return this.#error;
  }

  /** Why it ended; null while it is live. */
  get finishReason(): FinishReason | null {
    return this.#finishReason;
  }

  /** Stops the request and frees its pages; the iterator ends and `done` resolves as "cancelled". */
  cancel(): void {
    this.#cancel();
  }

  /** @internal */ push(event: TokenEvent): void {
    this.#buffered.push(event);
    this.#wake();
  }
  /** @internal */ end(result: RequestResult): void {
    this.#ended = true;
    this.#finishReason = result.finishReason;
    this.#resolve(result);
    this.#settle(result);
    this.#wake();
  }
  /** @internal */ fail(error: Error, result: RequestResult): void {
    this.#ended = true;
    this.#error = error;
    this.#finishReason = "error";
    this.#reject(error);
    this.#settle(result);
    this.#wake();
  }

  #wake(): void {
    const waiter = this.#waiter;
    this.#waiter = null;
    waiter?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<TokenEvent> {
    if (this.#iterating) throw new BadStateError(Status.BAD_STATE, `request ${this.id} is already being iterated`);
    this.#iterating = true;
    try {
      for (;;) {
        const event = this.#buffered.shift();
        if (event) yield event;
        else if (this.#error) throw this.#error;
        else if (this.#ended) return;
        else await new Promise<void>((resolve) => (this.#waiter = resolve));
      }
    } finally {
      // A consumer that breaks out early no longer wants the rest.
      if (!this.#ended) this.#cancel();
    }
  }
}
