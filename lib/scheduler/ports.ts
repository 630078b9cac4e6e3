// What the scheduler needs from its collaborators, as structural types: the KV cache, and the compute of
// a step (a StepRunner). The host runner builds one from the decode engine of this package and a model
// that lives outside it (activations come in, tokens out); a device runner keeps everything on the GPU.
import type { KVCacheStats } from "../kvcache";
import type { ActiveRequest } from "./request";

/** The page counts the scheduler reports and admits by (KVCache.stats() has them all). */
export type CacheStats = Pick<
  KVCacheStats,
  "pagesTotal" | "pagesUsed" | "pagesFree" | "pagesShared" | "pagesCached" | "pagesSwapped" | "wasteFraction"
>;

export interface SchedulerCache<Seq> {
  createSequence(options?: { tokens?: ArrayLike<number> }): Seq;
  append(seq: Seq, tokens: number | ArrayLike<number>): Int32Array;
  /** The host path's K/V writes (a runner may write K/V its own way, so only the host runner needs it). */
  writeKV?(layer: number, slots: Int32Array, k: Uint16Array, v: Uint16Array): void;
  release(seq: Seq): void;
  /** Optional: frees without publishing pages to the prefix cache (used after a failed step). */
  discard?(seq: Seq): void;
  swapOut(seq: Seq): void;
  swapIn(seq: Seq): void;
  stats(): CacheStats;
  /** Optional: rolls a sequence back to its first newLength tokens (speculative decoding's rejected drafts). */
  truncate?(seq: Seq, newLength: number): void;
}

/**
 * Speculative decoding's draft source (the Scheduler's `speculate` option): each step, each decode row
 * may bring up to maxDraftTokens guesses of its next tokens; the step verifies them (all in one
 * multi-query row) and keeps the longest prefix the model agrees with, plus the model's own next token.
 */
export interface Speculation {
  /** Most draft tokens per row and step (1..64). */
  maxDraftTokens: number;
  /** Up to `count` guessed next tokens of the request (after its last token); fewer, or none, is fine. */
  draft(request: ActiveRequest, count: number): ArrayLike<number>;
}

/** The sequence type of a cache. */
export type SeqOf<C> = C extends SchedulerCache<infer S> ? S : never;

export interface SchedulerPlan {
  kernel: string | number;
}

/** Generic over the cache type C: the engine reads the cache's own internals (pool, block-table rows). */
export interface SchedulerEngine<C, Seq, P extends SchedulerPlan> {
  /** With qLens (chunked steps), row i brings qLens[i] query tokens (DecodeEngine.plan's option). */
  plan(cache: C, sequences: readonly Seq[], options?: { qLens?: ArrayLike<number> }): P;
  run(plan: P, layer: number, q: Uint16Array, out: Uint16Array): void;
}

/** The model: fills activations (fp16/bf16 bits) and picks tokens. Everything else is the scheduler's. */
export interface StepModel {
  /** K and V of context positions [from, to) of one request in one layer: [to - from][Hkv][d] each. */
  prefill(request: ActiveRequest, layer: number, from: number, to: number, k: Uint16Array, v: Uint16Array): void;
  /**
   * q ([batch][Hq][d]), k and v ([batch][Hkv][d]) of each row's new token (at position contextLength)
   * in one layer; `previous` is the previous layer's attention output (null for layer 0).
   */
  forward(
    batch: readonly ActiveRequest[],
    layer: number,
    previous: Uint16Array | null,
    q: Uint16Array,
    k: Uint16Array,
    v: Uint16Array,
  ): void;
  /**
   * The token each row generates, from the last layer's attention output ([batch][Hq][d]): exactly one
   * integer id in 0..2^31-1 (below `vocab` if given) per row, or the step fails with ModelOutputError.
   */
  sample(batch: readonly ActiveRequest[], out: Uint16Array): ArrayLike<number>;
  /** Optional: the most context tokens a request may reach; longer requests fail with RequestTooLargeError at submit. */
  readonly maxContext?: number;
  /** Optional: token ids are below this; prompts and sampled tokens outside it are refused. */
  readonly vocab?: number;
}

/** The pool's geometry: what the scheduler itself admits and sizes requests by. */
export interface PoolShape {
  pageSize: number;
  /** Pages in the pool. */
  numPages: number;
  /** Width of a block-table row (default numPages). */
  maxPagesPerSequence?: number;
}

/** Sizes the host runner needs for its buffers, with the pool's. */
export interface ModelShape extends PoolShape {
  numLayers: number;
  numQoHeads: number;
  numKvHeads: number;
  headDim: number;
}

/** What one decode step produced: a token per row, and which kernel ran and how long planning took. */
export interface DecodeResult {
  tokens: ArrayLike<number>;
  kernel: string;
  planMs: number;
}

/**
 * The compute of a step, behind one port: the host path (a StepModel and an engine over host arrays)
 * and the device path (a model on GPU buffers and a stream) both implement it. The Scheduler decides
 * who runs and owns the cache's bookkeeping; the runner fills K/V and produces tokens.
 */
export interface StepRunner<Seq> {
  /** Writes the K and V of context positions [from, to) of `request` (every layer) into `slots`. */
  prefill(request: ActiveRequest, seq: Seq, slots: Int32Array, from: number, to: number): void;
  /**
   * One decode step: row i's new token (at position batch[i].contextLength) is written to slots[i]
   * in every layer; resolves to one sampled token per row. Rejects if the step failed.
   */
  decode(batch: readonly ActiveRequest[], sequences: readonly Seq[], slots: Int32Array): Promise<DecodeResult>;
  /**
   * Optional: one step of rows with several query tokens each (chunked prefill mixed with decode rows,
   * the Scheduler's maxBatchedTokens). Row i's queryLengths[i] tokens, at positions
   * batch[i].contextLength onwards, are written to its run of `slots` (rows in order) in every layer and
   * attend causally over the row's context; resolves to one token per row, sampled after its last query
   * token (the scheduler keeps it only for a row that reached the end of its known tokens).
   */
  decodeChunks?(
    batch: readonly ActiveRequest[],
    sequences: readonly Seq[],
    queryLengths: Int32Array,
    slots: Int32Array,
    /**
     * everyToken: one sampled token per query token (row 0's queries first), to verify drafts; drafts:
     * row i's draft tokens, its queries after its last known token (not in request.tokens).
     */
    options?: { everyToken?: boolean; drafts?: readonly (readonly number[] | undefined)[] },
  ): Promise<DecodeResult>;
  /** Optional: the most rows a step may have (its buffers' size); bounds and defaults the scheduler's maxBatch. */
  readonly maxBatch?: number;
  /** Optional: the most context tokens a request may reach. */
  readonly maxContext?: number;
  /** Optional: token ids are below this. */
  readonly vocab?: number;
}
