// A request's life in the scheduler, and the handle its submitter holds: an async iterator of the
// tokens it generates, a promise of its outcome, and cancel().
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

export type Outcome = "finished" | "cancelled";
export interface RequestResult {
  id: number;
  outcome: Outcome;
  tokens: number[];
  preemptions: number;
  swaps: number;
  prefixHitTokens: number;
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
    this.handle = new RequestHandle(id, () => cancel(id));
  }

  /** Context once finished: the last generated token is returned, never fed back. */
  get finalContext(): number {
    return this.promptLength + this.maxTokens - 1;
  }

  get live(): boolean {
    return this.state === "waiting" || this.state === "running" || this.state === "swapped";
  }

  result(outcome: Outcome): RequestResult {
    const { id, preemptions, swaps, prefixHitTokens } = this;
    return { id, outcome, tokens: this.tokens.slice(this.promptLength), preemptions, swaps, prefixHitTokens };
  }
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
  return { promptLength, maxTokens };
}

/** Every prompt id an integer in 0..min(vocab, 2^31)-1. */
export function checkPromptIds(prompt: ArrayLike<number>, vocab = INT32_MAX + 1): void {
  for (let i = 0; i < prompt.length; i++) {
    const t = prompt[i];
    if (!Number.isInteger(t) || t! < 0 || t! >= vocab || t! > INT32_MAX)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `submit: prompt[${i}] = ${show(t)} is not a token id (integer 0..${Math.min(vocab, INT32_MAX + 1) - 1})`,
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
  #resolve!: (result: RequestResult) => void;
  #reject!: (error: Error) => void;
  #iterating = false;

  constructor(id: number, cancel: () => void) {
    this.id = id;
    this.#cancel = cancel;
    this.done = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    // A submitter that only iterates still sees the error there; this keeps `done` from being unhandled.
    this.done.catch(() => {});
  }

  /** The typed error the request failed with, once it has (submit may return a handle already failed). */
  get error(): Error | null {
    return this.#error;
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
    this.#resolve(result);
    this.#wake();
  }
  /** @internal */ fail(error: Error): void {
    this.#ended = true;
    this.#error = error;
    this.#reject(error);
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
