// KVCache.truncate (speculative decoding's rollback) against a shadow model: random creates (with prompt
// prefix hits), appends, forks, truncates and releases; after each, a sequence's K/V read back as the
// shadow's tokens say, every page is held, free or cached exactly as often as the sequences hold it, and
// a prefix hit reads the K/V its prompt was written with (a truncate never changes a published page).
import { afterAll, describe, expect, test } from "bun:test";
import {
  BadStateError,
  DecodeEngine,
  InvalidArgumentError,
  KVCache,
  OutOfPagesError,
  type Sequence,
  StalePlanError,
} from "../lib/index.ts";
import { openRuntime } from "../lib/runtime";
import { Rng, testSeed, tokenData } from "./support/kvcache.ts";

const rt = openRuntime({ backend: "cpu" });
afterAll(() => rt.dispose());

const shape = { numLayers: 1, numKvHeads: 1, headDim: 64, dtype: "f16" as const };
const elems = shape.numKvHeads * shape.headDim;
// K and V of a token are a function of its prefix (as a model's are), so equal prompts share pages.
const chain = (previous: number, token: number) =>
  (Math.imul(previous ^ (token + 0x51ed27), 0x2545f491) ^ 0x6a09e667) | 0;
const stampsOf = (ids: number[]) => {
  const out: number[] = [];
  let stamp = 0;
  for (const id of ids) {
    stamp = chain(stamp, id);
    out.push(stamp);
  }
  return out;
};

interface Shadow {
  seq: Sequence;
  ids: number[];
}

function appendTokens(cache: KVCache, s: Shadow, ids: number[]): void {
  const slots = cache.append(s.seq, ids);
  const stamps = stampsOf([...s.ids, ...ids]).slice(s.ids.length);
  const { k, v } = tokenData(stamps, 0, elems);
  cache.writeKV(0, slots, k, v);
  s.ids.push(...ids);
}

function expectKV(cache: KVCache, s: Shadow): void {
  const want = tokenData(stampsOf(s.ids), 0, elems);
  const got = cache.readKV(0, s.seq);
  expect(s.seq.length).toBe(s.ids.length);
  expect(got.k).toEqual(want.k);
  expect(got.v).toEqual(want.v);
}

function expectPagesAccounted(cache: KVCache, live: Shadow[], after = ""): void {
  const P = cache.config.pageSize;
  const stats = cache.stats();
  expect([after, stats.pagesUsed + stats.pagesFree + stats.pagesCached]).toEqual([after, stats.pagesTotal]);
  const refs = cache.snapshot().refcounts.reduce((a, b) => a + b, 0);
  expect(refs).toBe(live.reduce((n, s) => n + Math.ceil(s.ids.length / P), 0));
}

describe("KVCache.truncate", () => {
  for (const pageSize of [1, 4, 16]) {
    test(`random rollbacks against the shadow model, page size ${pageSize}`, () => {
      const rng = new Rng(testSeed(`truncate p${pageSize}`, 40 + pageSize));
      using cache = new KVCache(rt, {
        ...shape,
        pageSize,
        numPages: 96,
        maxSequences: 8,
        maxPagesPerSequence: 64 / pageSize + 8,
      });
      const prompts = Array.from({ length: 3 }, () =>
        Array.from({ length: pageSize * (1 + rng.int(3)) + rng.int(pageSize) }, () => rng.int(3)),
      );
      const live: Shadow[] = [];
      const counts: Record<string, number> = {};
      const count = (what: string) => (counts[what] = (counts[what] ?? 0) + 1);
      for (let op = 0; op < 600; op++) {
        const r = rng.next();
        let what = "";
        try {
          if (live.length === 0 || (r < 0.15 && live.length < 8)) {
            const prompt = rng.pick(prompts);
            const seq = cache.createSequence({ tokens: prompt });
            const s = { seq, ids: prompt.slice(0, seq.length) };
            live.push(s);
            if (seq.length > 0) count("prefix hit");
            what = `create (hit ${seq.length})`;
            expectKV(cache, s); // the hit pages hold the K/V of the prompt they were published with
            appendTokens(cache, s, prompt.slice(seq.length));
          } else if (r < 0.45) {
            const s = rng.pick(live);
            what = `append to ${s.ids.length}`;
            appendTokens(
              cache,
              s,
              Array.from({ length: 1 + rng.int(6) }, () => rng.int(3)),
            );
          } else if (r < 0.75) {
            const s = rng.pick(live);
            const n = rng.chance(0.1)
              ? 0
              : Math.max(0, s.ids.length - 1 - rng.int(Math.min(2 * pageSize + 2, s.ids.length + 1)));
            if (n < Math.floor(s.ids.length / pageSize) * pageSize) count("into full pages");
            if (n % pageSize === 0) count("at a page edge");
            what = `truncate ${s.ids.length} to ${n}`;
            cache.truncate(s.seq, n);
            s.ids.length = n;
          } else if (r < 0.85 && live.length < 8) {
            const s = rng.pick(live);
            what = "fork";
            live.push({ seq: cache.fork(s.seq), ids: s.ids.slice() });
            count("fork");
          } else if (live.length > 1) {
            const i = rng.int(live.length);
            what = "release";
            cache.release(live[i]!.seq);
            live.splice(i, 1);
          }
        } catch (error) {
          if (!(error instanceof OutOfPagesError)) throw error;
          // A failed call changed nothing: free room and go on.
          const i = rng.int(live.length);
          cache.release(live[i]!.seq);
          live.splice(i, 1);
        }
        if (live.length > 0) expectKV(cache, rng.pick(live));
        expectPagesAccounted(cache, live, `op ${op}: ${what}`);
      }
      for (const s of live) expectKV(cache, s);
      for (const what of ["prefix hit", "into full pages", "at a page edge", "fork"])
        expect([what, counts[what] ?? 0]).not.toEqual([what, 0]);
    });
  }

  test("a rollback into a published page leaves it intact for the next prefix hit; the append copies it", () => {
    using cache = new KVCache(rt, { ...shape, pageSize: 4, numPages: 16, maxSequences: 4, maxPagesPerSequence: 4 });
    const prompt = [1, 2, 0, 1, 2, 2, 0, 1];
    const a: Shadow = { seq: cache.createSequence({ tokens: prompt }), ids: [] };
    appendTokens(cache, a, prompt);
    appendTokens(cache, a, [0]); // registers the two full pages
    const published = Array.from(cache.pagesOf(a.seq)).slice(0, 2);
    cache.truncate(a.seq, 6); // rejects the last 3 tokens: page 1 is kept partial
    a.ids.length = 6;
    expect(Array.from(cache.pagesOf(a.seq))).toEqual(published);
    appendTokens(cache, a, [2, 2]); // different drafts: written to a private copy of page 1
    expect(cache.pagesOf(a.seq)[1]).not.toBe(published[1]);
    expectKV(cache, a);
    const b: Shadow = { seq: cache.createSequence({ tokens: prompt }), ids: prompt.slice() };
    expect(b.seq.length).toBe(8);
    expect(Array.from(cache.pagesOf(b.seq))).toEqual(published);
    expectKV(cache, b);
  });

  test("a fork's shared partial page survives the parent's rollback and its own append", () => {
    using cache = new KVCache(rt, { ...shape, pageSize: 4, numPages: 16, maxSequences: 4, maxPagesPerSequence: 4 });
    const parent: Shadow = { seq: cache.createSequence(), ids: [] };
    appendTokens(cache, parent, [1, 2, 0, 1, 2, 2]);
    const child: Shadow = { seq: cache.fork(parent.seq), ids: parent.ids.slice() };
    cache.truncate(parent.seq, 5);
    parent.ids.length = 5;
    appendTokens(cache, parent, [0, 0, 0]);
    expectKV(cache, parent);
    expectKV(cache, child);
    appendTokens(cache, child, [1]);
    expectKV(cache, child);
    expectPagesAccounted(cache, [parent, child]);
    expect(cache.stats().pagesShared).toBe(1); // page 0 only
  });

  test("pages past the new end return to the pool; stale plans; misuse is refused and changes nothing", () => {
    using cache = new KVCache(rt, { ...shape, pageSize: 4, numPages: 8, maxSequences: 2, maxPagesPerSequence: 8 });
    const s: Shadow = { seq: cache.createSequence(), ids: [] };
    appendTokens(
      cache,
      s,
      Array.from({ length: 14 }, (_, i) => i % 3),
    );
    expect(cache.stats().pagesUsed).toBe(4);
    const engine = new DecodeEngine(rt, { numQoHeads: 2, numKvHeads: 1, headDim: 64, pageSize: 4, dtype: "f16" });
    try {
      const plan = engine.plan(cache, [s.seq]);
      cache.truncate(s.seq, 5);
      s.ids.length = 5;
      expect(() => engine.run(plan, 0, new Uint16Array(128), new Uint16Array(128))).toThrow(StalePlanError);
    } finally {
      engine.dispose();
    }
    expect(cache.stats().pagesUsed).toBe(2);
    expect(cache.stats().wastedSlots).toBe(3);
    expect(() => cache.truncate(s.seq, 6)).toThrow(InvalidArgumentError);
    expect(() => cache.truncate(s.seq, -1)).toThrow(InvalidArgumentError);
    expect(() => cache.truncate(s.seq, 1.5)).toThrow(InvalidArgumentError);
    expectKV(cache, s);
    cache.truncate(s.seq, 0);
    expect(cache.stats().pagesUsed).toBe(0);
    cache.release(s.seq);
    expect(() => cache.truncate(s.seq, 0)).toThrow(BadStateError);
  });
});
