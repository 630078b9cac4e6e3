// A model-based random test of the KV cache: random operations against a plain TypeScript shadow that
// knows each sequence's tokens, K/V stamps and logical pages (which sequences share which page), and
// predicts every operation's outcome (success or the typed error). After every operation it checks:
// - no page lost or used twice: each page is held (refcount = holders in the shadow), free, or cached,
//   exactly once; free + cached + used = total;
// - page lists and the block table: each sequence's page ids match the shadow's sharing structure, and
//   a plan that uploads only dirty columns (dirty_from) ends up with every live row's page ids;
// - stats (used, shared, swapped, free + cached, waste, prefix hits) equal the shadow's;
// - K and V read back equal to the shadow: one random sequence each step, all of them every few steps.
// A failed operation must leave stats, bookkeeping and the target's K/V exactly as before.
//
// Plans ride along: now and then the model plans a random batch of live sequences, and after every
// operation that plan must be stale (StalePlanError) if any of its sequences was appended to, released,
// swapped, or had its pages or row changed, and otherwise run and match attention computed here from the
// shadow's K/V.
import { expect } from "bun:test";
import { type Pointer, toArrayBuffer } from "bun:ffi";
import { native } from "../../lib/ffi/loader.ts";
import {
  BadStateError,
  DecodeEngine,
  InvalidArgumentError,
  KVCache,
  OutOfPagesError,
  OutOfRangeError,
  type Plan,
  type Runtime,
  type Sequence,
  StalePlanError,
  SwapFullError,
} from "../../lib/index.ts";
import { decode, encode, type KVDType } from "../../lib/dtype.ts";
import { fp8RoundTrip } from "./fp8.ts";
import { decodeAttention } from "./attention.ts";
import { tolerance } from "../../lib/testing/decode-check.ts";
import { REFUSED_WHILE_SWAPPED, Rng, fillToken, sequenceOps, tokenData } from "./kvcache.ts";

export interface ModelConfig {
  pageSize: number;
  numPages: number;
  maxSequences: number;
  maxPagesPerSequence: number;
  swapPages: number;
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  /** The cache's storage (default f16); an FP8 cache reads back its values' quantized form (fp8RoundTrip). */
  dtype?: KVDType;
}

const shape = { numLayers: 2, numKvHeads: 2, headDim: 64 };
/** Page sizes 1, 4 and 16 with small pools and tables, so exhaustion, eviction and the row limit happen often. */
export const MODEL_CONFIGS: ModelConfig[] = [
  { ...shape, pageSize: 1, numPages: 48, maxSequences: 8, maxPagesPerSequence: 20, swapPages: 24 },
  { ...shape, pageSize: 4, numPages: 32, maxSequences: 8, maxPagesPerSequence: 10, swapPages: 12 },
  { ...shape, pageSize: 16, numPages: 20, maxSequences: 6, maxPagesPerSequence: 6, swapPages: 8 },
];

/** Every kind of operation and outcome a run must have exercised, or it is not testing it. */
export const MODEL_OUTCOMES = [
  "create",
  "create (prefix hit)",
  "create (no row)",
  "append",
  "append (new pages)",
  "append (copy-on-write)",
  "append (too long)",
  "append (out of pages)",
  "write",
  "write (shared page)",
  "fork",
  "fork (no row)",
  "release",
  "release (swapped)",
  "swapOut",
  "swapOut (swap full)",
  "swapIn",
  "swapIn (no row)",
  "swapIn (out of pages)",
  "describeBatch",
  "describeBatch (swapped)",
  "misuse (released)",
  "misuse (swapped)",
  "misuse (other cache)",
  "registration found a cached twin",
  "plan",
  "plan replaced (stale)",
  "plan run (matches the reference)",
  "plan stale (appended to)",
  "plan stale (released)",
  "plan stale (swapped)",
  "plan stale (pages changed)",
];

type ErrorClass = new (...args: never[]) => Error;

/** A page as the shadow sees it: who holds it, and whether it is in the pool or in swap space. */
class LPage {
  holders = 0;
  pid = -1; // its page id while resident (set from the cache after the operation that placed it)
  resident = true;
  constructor(readonly hashed: boolean) {} // made by a sequence that was registering pages
}

interface Shadow {
  seq: Sequence;
  state: "live" | "swapped";
  stamps: number[]; // per token: the seed of its K and V
  tokens: number[] | null; // token ids while every token came with its id (prefix caching), else null
  registered: number; // leading pages the cache must have registered
  findable: number; // leading pages a prefix lookup must find (swap-in gives fresh, unregistered pages)
  prompt: number[]; // ids still to append after a prefix hit
  pages: LPage[];
}

const VOCAB = 3; // few token ids, so random prompts often share pages
const GROUP = 2; // query heads per KV head in the model's plans
// The shadow's K/V values reach 65504 (fp16's largest), so a small softmax scale keeps logits near 1
// and every context token visible in the output: a wrong page or length cannot hide.
const SM_SCALE = 1 / (8 * 30000);

interface Look {
  state: string;
  row: number;
  length: number;
  pages: Int32Array | null;
}

/** A plan the model made, the batch it holds, and what each sequence looked like then. */
interface Planned {
  plan: Plan;
  batch: Shadow[];
  looks: Look[];
  changed: string | null; // the first operation since that changed a planned sequence, by the model's account
}

/** Stamp of a token whose K and V are a function of the prefix (as a model's are), for prefix caching. */
function chainStamp(previous: number, token: number): number {
  return (Math.imul(previous ^ (token + 0x51ed27), 0x2545f491) ^ 0x6a09e667) | 0;
}

export class KVCacheModel {
  readonly cache: KVCache;
  readonly #other: KVCache; // a second cache, for "sequence of another cache"
  readonly #rng: Rng;
  readonly #cfg: ModelConfig;
  readonly #P: number;
  readonly #elems: number;
  readonly #seqs: Shadow[] = [];
  readonly #released: Sequence[] = [];
  readonly #prompts: number[][];
  #nextStamp = 1;
  #hitTokens = 0;
  // Block-table view and a mirror that only receives dirty columns, as the decode plan's upload does.
  readonly #table: Int32Array;
  readonly #dirty: Int32Array;
  readonly #mirror: Int32Array;
  readonly counts: Record<string, number> = {};
  readonly #engine: DecodeEngine;
  #planned: Planned | null = null;

  constructor(runtime: Runtime, cfg: ModelConfig, seed: number) {
    this.#cfg = cfg;
    this.#P = cfg.pageSize;
    this.#elems = cfg.numKvHeads * cfg.headDim;
    this.#rng = new Rng(seed);
    const dtype = cfg.dtype ?? "f16";
    this.cache = new KVCache(runtime, { ...cfg, dtype });
    this.#other = new KVCache(runtime, { ...cfg, numPages: 4, swapPages: 0, dtype });
    const table = new BigUint64Array(1);
    const dirty = new BigUint64Array(1);
    expect(native().pkv_kvpool_table_addresses(this.cache.poolHandle, table, dirty)).toBe(0);
    const width = cfg.maxPagesPerSequence;
    this.#table = new Int32Array(toArrayBuffer(Number(table[0]) as Pointer, 0, cfg.maxSequences * width * 4));
    this.#dirty = new Int32Array(toArrayBuffer(Number(dirty[0]) as Pointer, 0, cfg.maxSequences * 4));
    this.#mirror = new Int32Array(cfg.maxSequences * width).fill(-1);
    // A few "system prompts" of 1-3 pages plus a bit, from the tiny vocabulary.
    this.#prompts = Array.from({ length: 4 }, () =>
      this.#randomTokens(this.#P * (1 + this.#rng.int(3)) + this.#rng.int(this.#P)),
    );
    this.#engine = new DecodeEngine(runtime, {
      numQoHeads: GROUP * cfg.numKvHeads,
      numKvHeads: cfg.numKvHeads,
      headDim: cfg.headDim,
      pageSize: cfg.pageSize,
      dtype,
      maxBatch: cfg.maxSequences,
      smScale: SM_SCALE,
    });
  }

  dispose(): void {
    // A plan that still holds goes stale with its cache.
    const planned = this.#planned;
    const holds = planned !== null && planned.changed === null && this.#looksAsPlanned(planned);
    this.cache.dispose();
    if (holds) expect(() => this.#runPlan(planned!, 0)).toThrow(/its KV cache was disposed/);
    this.#engine.dispose();
    this.#other.dispose();
  }

  /** Runs one random operation and checks everything; `fullCheck` also reads every sequence's K/V. */
  step(fullCheck: boolean): void {
    if (this.#rng.chance(0.02)) this.#plan();
    const r = this.#rng.next();
    const live = this.#seqs.filter((s) => s.state === "live");
    const swapped = this.#seqs.filter((s) => s.state === "swapped");
    if (r < 0.12 || this.#seqs.length === 0) this.#create();
    else if (r < 0.45 && live.length > 0) this.#append(this.#rng.pick(live));
    else if (r < 0.52 && live.length > 0) this.#rewrite(this.#rng.pick(live));
    else if (r < 0.59 && live.length > 0) this.#fork(this.#rng.pick(live));
    else if (r < 0.7) this.#release(this.#rng.pick(this.#seqs));
    else if (r < 0.79 && live.length > 0) this.#swapOut(this.#rng.pick(live));
    else if (r < 0.88 && swapped.length > 0) this.#swapIn(this.#rng.pick(swapped));
    else if (r < 0.93) this.#describe();
    else this.#misuse();
    this.#audit();
    this.#checkPlan();
    if (fullCheck) for (const s of this.#seqs) this.#checkKV(s, -1);
    else if (this.#seqs.length > 0) {
      const s = this.#rng.pick(this.#seqs);
      if (s.state === "live") this.#checkKV(s, this.#rng.int(this.#cfg.numLayers));
    }
  }

  // ---- operations ----------------------------------------------------------------------------------

  #create(): void {
    const withTokens = this.#rng.chance(0.6);
    let tokens: number[] = [];
    if (withTokens) {
      tokens = this.#rng.chance(0.8) ? [...this.#rng.pick(this.#prompts)] : [];
      tokens.push(...this.#randomTokens(this.#rng.int(2 * this.#P + 2)));
    }
    if (this.#liveCount() >= this.#cfg.maxSequences) {
      this.#expectUnchanged("create (no row)", OutOfRangeError, () =>
        this.cache.createSequence(withTokens ? { tokens: Int32Array.from(tokens) } : {}),
      );
      return;
    }
    // Lower bound for hits: the pages live sequences registered that match the new prompt.
    let minHit = 0;
    for (const s of this.#seqs)
      if (s.state === "live" && s.tokens)
        minHit = Math.max(minHit, Math.min(s.findable, this.#commonPages(s.tokens, tokens)));
    minHit = Math.min(minHit, this.#cfg.maxPagesPerSequence);
    const seq = this.cache.createSequence(
      withTokens ? { tokens: this.#rng.chance(0.5) ? tokens : Int32Array.from(tokens) } : {},
    );
    const hit = seq.prefixHitTokens;
    expect(hit % this.#P).toBe(0);
    expect(hit).toBeLessThanOrEqual(tokens.length);
    expect(hit).toBeGreaterThanOrEqual(minHit * this.#P);
    expect(seq.length).toBe(hit);
    this.#hitTokens += hit;
    const s: Shadow = {
      seq,
      state: "live",
      stamps: this.#chainStamps(tokens.slice(0, hit), 0),
      tokens: tokens.slice(0, hit),
      registered: hit / this.#P,
      findable: hit / this.#P,
      prompt: tokens.slice(hit),
      pages: [],
    };
    const pids = this.cache.pagesOf(seq);
    for (const pid of pids) s.pages.push(this.#hold(this.#residentByPid(pid) ?? this.#placed(new LPage(true), pid)));
    this.#seqs.push(s);
    this.#count(hit > 0 ? "create (prefix hit)" : "create");
  }

  #append(s: Shadow): void {
    const P = this.#P;
    const cfg = this.#cfg;
    // Mostly short appends; now and then one that crosses several pages or exceeds the row.
    const n = this.#rng.chance(0.05) ? this.#rng.int(cfg.maxPagesPerSequence * P + 2) : this.#rng.int(P + 2);
    const withIds = s.tokens !== null && this.#rng.chance(0.9);
    const ids = withIds ? s.prompt.slice(0, n) : [];
    if (withIds) ids.push(...this.#randomTokens(n - ids.length));
    const length = s.stamps.length;
    const have = Math.ceil(length / P);
    const need = Math.ceil((length + n) / P);
    const copyLast = n > 0 && length % P !== 0 && s.pages[have - 1]!.holders > 1;
    const run = () => this.cache.append(s.seq, withIds ? (this.#rng.chance(0.5) ? ids : Int32Array.from(ids)) : n);
    if (need > cfg.maxPagesPerSequence) return this.#expectUnchanged("append (too long)", OutOfRangeError, run, s);
    if (need - have + (copyLast ? 1 : 0) > cfg.numPages - this.#usedPages().size)
      return this.#expectUnchanged("append (out of pages)", OutOfPagesError, run, s);
    const slots = run();
    expect(slots.length).toBe(n);
    const flushFrom = s.registered;
    this.#flushed(s);
    const hashed = s.tokens !== null && withIds;
    if (copyLast) {
      s.pages[have - 1]!.holders--;
      s.pages[have - 1] = this.#hold(new LPage(hashed));
    }
    for (let c = have; c < need; c++) s.pages.push(this.#hold(new LPage(hashed)));
    let stamps: number[];
    if (hashed) {
      s.prompt.splice(0, Math.min(n, s.prompt.length));
      stamps = this.#chainStamps(ids, s.stamps.length === 0 ? 0 : s.stamps.at(-1)!);
      s.tokens!.push(...ids);
    } else {
      stamps = Array.from({ length: n }, () => this.#nextStamp++);
      if (n > 0) {
        s.tokens = null;
        s.prompt = [];
      }
    }
    s.stamps.push(...stamps);
    if (n > 0) this.#changedSince("appended to", s);
    this.#reconcile(s, flushFrom);
    for (let i = 0; i < n; i++) expect(slots[i]).toBe(this.#slotOf(s, length + i));
    for (let layer = 0; layer < cfg.numLayers; layer++) {
      const { k, v } = tokenData(stamps, layer, this.#elems);
      this.cache.writeKV(layer, slots, k, v);
    }
    this.#count(copyLast ? "append (copy-on-write)" : need > have ? "append (new pages)" : "append");
  }

  /** Writes new K/V over existing tokens: allowed only on pages this sequence alone holds. */
  #rewrite(s: Shadow): void {
    if (s.stamps.length === 0) return;
    const positions = [...new Set(Array.from({ length: 1 + this.#rng.int(4) }, () => this.#rng.int(s.stamps.length)))];
    const P = this.#P;
    const page = (i: number) => s.pages[Math.floor(i / P)]!;
    const allowed = positions.every((i) => page(i).holders === 1 && !page(i).hashed);
    const forbidden = positions.some((i) => page(i).holders > 1);
    if (!allowed && !forbidden) return; // a page that may or may not be registered: not predictable here
    const slots = Int32Array.from(positions, (i) => this.#slotOf(s, i));
    const stamps = positions.map(() => this.#nextStamp++);
    const layer = this.#rng.int(this.#cfg.numLayers);
    const { k, v } = tokenData(stamps, layer, this.#elems);
    if (forbidden)
      return this.#expectUnchanged(
        "write (shared page)",
        BadStateError,
        () => this.cache.writeKV(layer, slots, k, v),
        s,
      );
    this.cache.writeKV(layer, slots, k, v);
    // Stamps are per token for all layers; a rewrite of one layer gives the token per-layer stamps.
    positions.forEach((i, j) => (s.stamps[i] = this.#layerStamp(s.stamps[i]!, layer, stamps[j]!)));
    this.#count("write");
  }

  #fork(s: Shadow): void {
    if (this.#liveCount() >= this.#cfg.maxSequences)
      return this.#expectUnchanged("fork (no row)", OutOfRangeError, () => this.cache.fork(s.seq), s);
    const child = this.cache.fork(s.seq);
    const flushFrom = s.registered;
    this.#flushed(s);
    this.#reconcile(s, flushFrom);
    const c: Shadow = {
      seq: child,
      state: "live",
      stamps: [...s.stamps],
      tokens: s.tokens && [...s.tokens],
      registered: s.registered,
      findable: s.findable,
      prompt: [...s.prompt],
      pages: s.pages.map((p) => this.#hold(p)),
    };
    this.#seqs.push(c);
    this.#reconcile(c, c.registered);
    this.#count("fork");
  }

  #release(s: Shadow): void {
    this.cache.release(s.seq);
    this.#changedSince("released", s);
    for (const p of s.pages) p.holders--;
    this.#seqs.splice(this.#seqs.indexOf(s), 1);
    this.#released.push(s.seq);
    if (this.#released.length > 16) this.#released.shift();
    this.#count(s.state === "live" ? "release" : "release (swapped)");
  }

  #swapOut(s: Shadow): void {
    const moving = s.pages.filter((p) => p.holders === 1).length;
    const swapFree = this.#cfg.swapPages - this.#swappedPages();
    if (moving > swapFree)
      return this.#expectUnchanged("swapOut (swap full)", SwapFullError, () => this.cache.swapOut(s.seq), s);
    this.cache.swapOut(s.seq);
    this.#changedSince("swapped", s);
    const flushFrom = s.registered;
    this.#flushed(s);
    s.state = "swapped";
    const real = this.cache.pagesOf(s.seq);
    s.pages.forEach((p, c) => {
      if (p.holders === 1 && real[c]! >= 0) {
        // Registration found this page's link in the cache, held elsewhere: the sequence switched to it.
        expect(c >= flushFrom && c < s.registered).toBe(true);
        this.#count("registration found a cached twin");
        p.holders--;
        s.pages[c] = this.#hold(this.#residentByPid(real[c]!)!);
      } else if (p.holders === 1) p.resident = false;
    });
    this.#count("swapOut");
  }

  #swapIn(s: Shadow): void {
    const run = () => this.cache.swapIn(s.seq);
    if (this.#liveCount() >= this.#cfg.maxSequences)
      return this.#expectUnchanged("swapIn (no row)", OutOfRangeError, run);
    const moving = s.pages.filter((p) => !p.resident).length;
    if (moving > this.#cfg.numPages - this.#usedPages().size)
      return this.#expectUnchanged("swapIn (out of pages)", OutOfPagesError, run);
    run();
    this.#changedSince("swapped", s);
    s.state = "live";
    const real = this.cache.pagesOf(s.seq);
    const firstMoved = s.pages.findIndex((p) => !p.resident);
    if (firstMoved >= 0) s.findable = Math.min(s.findable, firstMoved);
    s.pages.forEach((p, c) => {
      if (!p.resident) this.#placed(p, real[c]!);
    });
    this.#count("swapIn");
  }

  #describe(): void {
    const batch = this.#seqs.filter((s) => s.state === "live" && this.#rng.chance(0.7));
    const rows = new Int32Array(batch.length + 1);
    const lengths = new Int32Array(batch.length + 1);
    const swapped = this.#seqs.find((s) => s.state === "swapped");
    if (swapped && this.#rng.chance(0.2)) {
      const bad = [...batch.map((s) => s.seq), swapped.seq];
      return this.#expectUnchanged("describeBatch (swapped)", BadStateError, () =>
        this.cache.describeBatch(bad, rows, lengths),
      );
    }
    this.cache.describeBatch(
      batch.map((s) => s.seq),
      rows,
      lengths,
    );
    batch.forEach((s, i) => {
      expect(lengths[i]).toBe(s.stamps.length);
      expect(rows[i]).toBe(s.seq.row);
    });
    expect(new Set(rows.subarray(0, batch.length)).size).toBe(batch.length);
    this.#count("describeBatch");
  }

  /** Released or swapped-out sequences, and another cache's, used where that is forbidden. */
  #misuse(): void {
    const cache = this.cache;
    const released = this.#released.length > 0 ? this.#rng.pick(this.#released) : null;
    const swapped = this.#seqs.find((s) => s.state === "swapped");
    const r = this.#rng.int(3);
    const ops = sequenceOps(cache);
    if (r === 0 && released) {
      const op = ops[this.#rng.pick(Object.keys(ops))]!;
      return this.#expectUnchanged("misuse (released)", BadStateError, () => op(released));
    }
    if (r === 1 && swapped) {
      const op = ops[this.#rng.pick(REFUSED_WHILE_SWAPPED)]!;
      return this.#expectUnchanged("misuse (swapped)", BadStateError, () => op(swapped.seq), swapped);
    }
    const foreign = this.#other.createSequence();
    const target = this.#seqs.length > 0 ? this.#rng.pick(this.#seqs) : undefined;
    const op = ops[this.#rng.pick(Object.keys(ops))]!;
    this.#expectUnchanged("misuse (other cache)", InvalidArgumentError, () => op(foreign), target);
    this.#other.release(foreign);
  }

  // ---- plans ---------------------------------------------------------------------------------------

  /** Plans a random batch of live, non-empty sequences; the plan it replaces must be stale from now on. */
  #plan(): void {
    const candidates = this.#seqs.filter((s) => s.state === "live" && s.stamps.length > 0);
    if (candidates.length === 0) return;
    const batch = candidates.filter(() => this.#rng.chance(0.6));
    if (batch.length === 0) batch.push(this.#rng.pick(candidates));
    const old = this.#planned;
    const plan = this.#engine.plan(
      this.cache,
      batch.map((s) => s.seq),
    );
    this.#planned = { plan, batch, looks: batch.map((s) => this.#look(s)), changed: null };
    this.#count("plan");
    if (old) {
      expect(() => this.#runPlan(old, 0)).toThrow(/was replaced by plan/);
      this.#count("plan replaced (stale)");
    }
  }

  /** An operation changed a sequence: a plan holding it must be stale. */
  #changedSince(what: string, s: Shadow): void {
    const planned = this.#planned;
    if (planned && planned.changed === null && planned.batch.includes(s)) planned.changed = what;
  }

  /** What a plan depends on: state, row, length and page ids. */
  #look(s: Shadow): Look {
    const seq = s.seq;
    return {
      state: seq.state,
      row: seq.row,
      length: seq.length,
      pages: seq.state === "released" ? null : this.cache.pagesOf(seq),
    };
  }

  #looksAsPlanned(planned: Planned): boolean {
    return planned.batch.every((s, i) => {
      const then = planned.looks[i]!;
      const seq = s.seq;
      if (seq.state !== then.state || seq.row !== then.row || seq.length !== then.length) return false;
      if (then.pages === null) return true;
      const now = this.cache.pagesOf(seq);
      return now.length === then.pages.length && now.every((page, c) => page === then.pages![c]);
    });
  }

  /** After every operation: a changed batch makes the plan stale; otherwise it runs (often) and matches the shadow. */
  #checkPlan(): void {
    const planned = this.#planned;
    if (!planned) return;
    const changed = planned.changed ?? (this.#looksAsPlanned(planned) ? null : "pages changed");
    const layer = this.#rng.int(this.#cfg.numLayers);
    if (changed !== null) {
      expect(() => this.#runPlan(planned, layer)).toThrow(StalePlanError);
      this.#count(`plan stale (${changed})`);
      this.#planned = null;
      return;
    }
    if (!this.#rng.chance(0.25)) return; // a run and the reference cost more than the rest of a step
    const q = encode(
      "f16",
      Array.from({ length: planned.batch.length * GROUP * this.#elems }, () => this.#rng.next() * 2 - 1),
    );
    const out = this.#runPlan(planned, layer, q);
    const want = this.#attention(planned.batch, layer, q);
    const got = decode("f16", out);
    let diff = 0;
    let norm = 0;
    for (let i = 0; i < got.length; i++) {
      diff += (got[i]! - want[i]!) ** 2;
      norm += want[i]! ** 2;
    }
    const relError = Math.sqrt(diff / Math.max(norm, 1e-30));
    if (!(relError < tolerance("f16")))
      throw new Error(
        `plan ${planned.plan.id} (${planned.batch.length} rows), layer ${layer}: relative error ${relError} against the shadow`,
      );
    this.#count("plan run (matches the reference)");
  }

  #runPlan(
    planned: Planned,
    layer: number,
    q: Uint16Array = new Uint16Array(planned.batch.length * GROUP * this.#elems),
  ): Uint16Array {
    const out = new Uint16Array(q.length);
    this.#engine.run(planned.plan, layer, q, out);
    return out;
  }

  /** Decode attention of one layer over the shadow's K/V (stored as pages of one token each). */
  #attention(batch: Shadow[], layer: number, q: Uint16Array): Float64Array {
    const E = this.#elems;
    const lengths = batch.map((s) => s.stamps.length);
    const tokens = lengths.reduce((a, n) => a + n, 0);
    const kPages = new Uint16Array(tokens * E);
    const vPages = new Uint16Array(tokens * E);
    let at = 0;
    for (const s of batch)
      for (const stamp of s.stamps) {
        fillToken(kPages, at * E, E, this.#stampIn(stamp, layer), layer, 0);
        fillToken(vPages, at * E, E, this.#stampIn(stamp, layer), layer, 1);
        at++;
      }
    const [kStored, vStored] = [this.#stored(kPages), this.#stored(vPages)];
    const pageIndptr = Int32Array.from([
      0,
      ...lengths.map((_, i) => lengths.slice(0, i + 1).reduce((a, n) => a + n, 0)),
    ]);
    return decodeAttention(
      {
        numQoHeads: GROUP * this.#cfg.numKvHeads,
        numKvHeads: this.#cfg.numKvHeads,
        headDim: this.#cfg.headDim,
        pageSize: 1,
        dtype: "f16",
        numPages: tokens,
        pageIndptr,
        pageIndices: Int32Array.from({ length: tokens }, (_, i) => i),
        seqLens: Int32Array.from(lengths),
        kPages: kStored,
        vPages: vStored,
        q,
      },
      SM_SCALE,
    ).out;
  }

  // ---- shadow bookkeeping --------------------------------------------------------------------------

  #hold(p: LPage): LPage {
    p.holders++;
    return p;
  }

  #placed(p: LPage, pid: number): LPage {
    p.pid = pid;
    p.resident = true;
    return p;
  }

  /** At the cache's registration points, a registering sequence's full pages become registered. */
  #flushed(s: Shadow): void {
    if (!s.tokens) return;
    const full = Math.floor(s.stamps.length / this.#P);
    if (s.findable === s.registered) s.findable = full;
    s.registered = full;
  }

  /**
   * Takes page ids from the cache for pages the shadow just created, and follows registration switches:
   * a page in the newly registered range whose link the cache already held is replaced by that page.
   */
  #reconcile(s: Shadow, flushFrom: number): void {
    const real = this.cache.pagesOf(s.seq);
    expect(real.length).toBe(s.pages.length);
    s.pages.forEach((p, c) => {
      if (p.pid < 0 || real[c] === p.pid) return;
      expect(c >= flushFrom && c < s.registered && p.holders === 1).toBe(true);
      this.#count("registration found a cached twin");
      p.holders--;
      s.pages[c] = this.#hold(this.#residentByPid(real[c]!, p) ?? this.#placed(new LPage(true), real[c]!));
    });
    s.pages.forEach((p, c) => {
      if (p.pid < 0) this.#placed(p, real[c]!);
    });
  }

  #residentByPid(pid: number, except?: LPage): LPage | undefined {
    for (const s of this.#seqs)
      for (const p of s.pages) if (p !== except && p.resident && p.pid === pid && p.holders > 0) return p;
    return undefined;
  }

  #usedPages(): Set<LPage> {
    const used = new Set<LPage>();
    for (const s of this.#seqs) for (const p of s.pages) if (p.resident) used.add(p);
    return used;
  }

  #swappedPages(): number {
    let n = 0;
    for (const s of this.#seqs) for (const p of s.pages) if (!p.resident) n++;
    return n;
  }

  #liveCount(): number {
    return this.#seqs.filter((s) => s.state === "live").length;
  }

  #slotOf(s: Shadow, i: number): number {
    const page = s.pages[Math.floor(i / this.#P)]!;
    return page.pid * this.#P + (i % this.#P);
  }

  #randomTokens(n: number): number[] {
    return Array.from({ length: n }, () => 1 + this.#rng.int(VOCAB));
  }

  #chainStamps(tokens: number[], previous: number): number[] {
    const out: number[] = [];
    for (const t of tokens) {
      previous = chainStamp(previous, t);
      out.push(previous);
    }
    return out;
  }

  /** Full pages at the start of `a` and `b` with identical token ids. */
  #commonPages(a: number[], b: number[]): number {
    const P = this.#P;
    let pages = 0;
    while ((pages + 1) * P <= Math.min(a.length, b.length)) {
      for (let i = pages * P; i < (pages + 1) * P; i++) if (a[i] !== b[i]) return pages;
      pages++;
    }
    return pages;
  }

  // Rewrites of one layer: a token's stamp becomes a record of per-layer stamps, encoded in a number.
  readonly #layerStamps = new Map<number, number[]>();
  #layerStamp(old: number, layer: number, stamp: number): number {
    const layers = this.#layerStamps.get(old) ?? Array.from({ length: this.#cfg.numLayers }, () => old);
    const updated = layers.slice();
    updated[layer] = stamp;
    const id = -this.#nextStamp++;
    this.#layerStamps.set(id, updated);
    return id;
  }
  #stampIn(stamp: number, layer: number): number {
    return this.#layerStamps.get(stamp)?.[layer] ?? stamp;
  }

  #count(what: string): void {
    this.counts[what] = (this.counts[what] ?? 0) + 1;
  }

  /** Runs an operation that must throw `Class` and change nothing observable. */
  #expectUnchanged(what: string, Class: ErrorClass, run: () => unknown, target?: Shadow): void {
    const before = {
      stats: this.cache.stats(),
      snapshot: this.cache.snapshot(),
      pages: this.#seqs.map((s) => this.cache.pagesOf(s.seq)),
    };
    const kv = target?.state === "live" ? this.cache.readKV(0, target.seq) : null;
    expect(run).toThrow(Class);
    expect(this.cache.stats()).toEqual(before.stats);
    expect(this.cache.snapshot()).toEqual(before.snapshot);
    expect(this.#seqs.map((s) => this.cache.pagesOf(s.seq))).toEqual(before.pages);
    if (kv) expect(this.cache.readKV(0, target!.seq)).toEqual(kv);
    this.#count(what);
  }

  // ---- checks ----------------------------------------------------------------------------------------

  #audit(): void {
    const cfg = this.#cfg;
    const P = this.#P;
    const snap = this.cache.snapshot();
    const stats = this.cache.stats();
    // Page lists match the shadow; one page id per resident logical page.
    const byPid = new Map<number, LPage>();
    const holders = new Map<LPage, number>();
    const fill = new Map<LPage, number>();
    for (const s of this.#seqs) {
      expect(s.seq.state).toBe(s.state);
      expect(s.seq.length).toBe(s.stamps.length);
      const real = this.cache.pagesOf(s.seq);
      expect(real.length).toBe(Math.ceil(s.stamps.length / P));
      expect(s.pages.length).toBe(real.length);
      s.pages.forEach((p, c) => {
        expect(real[c]).toBe(p.resident ? p.pid : -1);
        holders.set(p, (holders.get(p) ?? 0) + 1);
        const f = Math.min(P, s.stamps.length - c * P);
        if (fill.has(p)) expect(fill.get(p)).toBe(f); // holders agree on how full a page is
        fill.set(p, f);
        if (!p.resident) return;
        const other = byPid.get(p.pid);
        if (other && other !== p) throw new Error(`page ${p.pid} is used twice`);
        byPid.set(p.pid, p);
      });
    }
    let shared = 0;
    let wasted = 0;
    let swapped = 0;
    for (const [p, n] of holders) {
      expect(p.holders).toBe(n);
      if (!p.resident) {
        swapped++;
        continue;
      }
      expect(snap.refcounts[p.pid]).toBe(n);
      if (n > 1) shared++;
      wasted += P - fill.get(p)!;
    }
    // Every page is held, free or cached, exactly once.
    const seen = new Uint8Array(cfg.numPages);
    for (const pid of byPid.keys()) seen[pid] = 1;
    for (const list of [snap.freePages, snap.cachedPages])
      for (const pid of list) {
        if (seen[pid]) throw new Error(`page ${pid} is listed twice (held, free or cached)`);
        seen[pid] = 1;
        expect(snap.refcounts[pid]).toBe(0);
      }
    expect(byPid.size + snap.freePages.length + snap.cachedPages.length).toBe(cfg.numPages);
    expect(stats).toEqual({
      pagesTotal: cfg.numPages,
      pagesUsed: byPid.size,
      pagesFree: snap.freePages.length,
      pagesShared: shared,
      pagesCached: snap.cachedPages.length,
      pagesSwapped: swapped,
      swapSlotsTotal: cfg.swapPages,
      swapSlotsUsed: swapped,
      wastedSlots: wasted,
      wasteFraction: byPid.size === 0 ? 0 : wasted / (byPid.size * P),
      prefixHitTokens: this.#hitTokens,
    });
    // The plan's view: copying only the dirty columns keeps a mirror of every live row's pages. The marks
    // are left for the real plans (the CPU backend runs from the table they upload), so the mirror is
    // refreshed from dirty_from on each audit: a column below it must not have changed since last seen.
    const width = cfg.maxPagesPerSequence;
    for (const s of this.#seqs) {
      if (s.state !== "live") continue;
      const row = s.seq.row;
      const pages = s.pages.length;
      for (let c = this.#dirty[row]!; c < pages; c++) this.#mirror[row * width + c] = this.#table[row * width + c]!;
      for (let c = 0; c < pages; c++) expect(this.#mirror[row * width + c]).toBe(s.pages[c]!.pid);
    }
  }

  /** The values the cache reads back for written `data`: the data itself, or its FP8 round trip. */
  #stored(data: Uint16Array): Uint16Array {
    return this.#cfg.dtype === "fp8_e4m3" ? fp8RoundTrip("f16", data, this.#cfg.headDim) : data;
  }

  /** Reads one layer (or all with layer -1) of a live sequence and compares with the shadow's stamps. */
  #checkKV(s: Shadow, layer: number): void {
    if (s.state !== "live") return;
    const layers = layer >= 0 ? [layer] : Array.from({ length: this.#cfg.numLayers }, (_, l) => l);
    const E = this.#elems;
    for (const l of layers) {
      const got = this.cache.readKV(l, s.seq);
      const k = new Uint16Array(s.stamps.length * E);
      const v = new Uint16Array(s.stamps.length * E);
      s.stamps.forEach((stamp, i) => {
        fillToken(k, i * E, E, this.#stampIn(stamp, l), l, 0);
        fillToken(v, i * E, E, this.#stampIn(stamp, l), l, 1);
      });
      const [kWant, vWant] = [this.#stored(k), this.#stored(v)];
      if (!equalBits(got.k, kWant) || !equalBits(got.v, vWant)) {
        const bad = s.stamps.findIndex((_, i) => got.k[i * E] !== kWant[i * E] || got.v[i * E] !== vWant[i * E]);
        throw new Error(
          `sequence ${s.seq.id}, layer ${l}: K/V differ from the shadow at token ${bad} of ${s.stamps.length}`,
        );
      }
    }
  }
}

function equalBits(a: Uint16Array, b: Uint16Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Runs `ops` random operations per configuration; returns how often each kind of operation ran. */
export function runModel(runtime: Runtime, configs: ModelConfig[], ops: number, seed: number, fullCheckEvery: number) {
  const counts: Record<string, number> = {};
  configs.forEach((cfg, i) => {
    const model = new KVCacheModel(runtime, cfg, seed + i);
    try {
      for (let op = 0; op < ops; op++) {
        try {
          model.step(op % fullCheckEvery === fullCheckEvery - 1);
        } catch (error) {
          (error as Error).message = `page size ${cfg.pageSize}, operation ${op}: ${(error as Error).message}`;
          throw error;
        }
      }
    } finally {
      model.dispose();
    }
    for (const [what, n] of Object.entries(model.counts)) counts[what] = (counts[what] ?? 0) + n;
  });
  return counts;
}
