// Chunked prefill (maxBatchedTokens) and speculative decoding (speculate) in the Scheduler on the CPU
// backend: prompts run through the attention engine in chunks mixed with decode rows, never more query
// tokens a step than the budget; a prefix hit's suffix is prefilled from the hit; verified drafts keep
// the tokens plain decoding gives, rejected ones are rolled back; the tokens (sampled from the attention
// output) equal a plain run's, and every request's K/V at retirement equals the model's.
import { afterAll, describe, expect, test } from "bun:test";
import { DecodeEngine } from "../lib/engine";
import { InvalidArgumentError } from "../lib/errors";
import { KVCache, type Sequence } from "../lib/kvcache";
import { openRuntime } from "../lib/runtime";
import {
  type ActiveRequest,
  HostStepRunner,
  ModelOutputError,
  type RequestSpec,
  Scheduler,
  type Speculation,
} from "../lib/scheduler";
import { mix, SyntheticModel } from "../lib/scheduler/synthetic";

const rt = openRuntime({ backend: "cpu" });
afterAll(() => rt.dispose());

const SHAPE = { numLayers: 2, numQoHeads: 4, numKvHeads: 2, headDim: 64, pageSize: 4 };

/** The synthetic model, but each token depends on the attention output it is sampled from (coarsely). */
class AttentionSampler extends SyntheticModel {
  override sample(batch: readonly ActiveRequest[], out: Uint16Array): number[] {
    const row = SHAPE.numQoHeads * SHAPE.headDim;
    return batch.map((request, i) => {
      let h = mix(request.id, request.contextLength);
      for (let e = 0; e < 8; e++) h = mix(h, out[i * row + e * 17]! >> 6); // drop low mantissa bits
      return h % this.shape.vocab;
    });
  }
}

function setup(maxBatchedTokens: number | undefined, speculate?: Speculation) {
  const cache = new KVCache(rt, { ...SHAPE, numPages: 256, dtype: "f16", swapPages: 64, maxSequences: 32 });
  const engine = new DecodeEngine(rt, { ...SHAPE, dtype: "f16", maxBatch: 8 });
  const model = new AttentionSampler({ ...SHAPE, dtype: "f16" });
  const host = new HostStepRunner({
    cache,
    engine,
    model,
    shape: { ...SHAPE, numPages: 256, maxPagesPerSequence: 256 },
    maxBatch: 8,
  });
  // The query lengths of every step, and each row's first query position, as the runner saw them.
  const steps: { rows: { id: number; from: number; n: number }[] }[] = [];
  const runner = {
    maxBatch: 8,
    vocab: model.shape.vocab,
    prefill: host.prefill.bind(host),
    decode: host.decode.bind(host),
    decodeChunks: (
      batch: readonly ActiveRequest[],
      seqs: readonly Sequence[],
      q: Int32Array,
      slots: Int32Array,
      options?: { everyToken?: boolean },
    ) => {
      steps.push({ rows: batch.map((r, i) => ({ id: r.id, from: r.contextLength, n: q[i]! })) });
      return host.decodeChunks(batch, seqs, q, slots, options);
    },
  };
  const scheduler = new Scheduler({ cache, runner, maxBatch: 8, maxBatchedTokens, swap: true, speculate });
  const kvAtRetire = new Map<number, boolean>();
  scheduler.onRetire((request, seq: Sequence) => {
    // Every context token's K/V as the model defines it (prefix-hit pages included).
    const kvRow = SHAPE.numKvHeads * SHAPE.headDim;
    let ok = seq.length === request.contextLength;
    for (let layer = 0; layer < SHAPE.numLayers && ok; layer++) {
      const { k, v } = cache.readKV(layer, seq);
      const wantK = new Uint16Array(k.length),
        wantV = new Uint16Array(v.length);
      model.prefill(request, layer, 0, seq.length, wantK, wantV);
      ok = k.every((x, i) => x === wantK[i]) && v.every((x, i) => x === wantV[i]) && k.length === seq.length * kvRow;
    }
    kvAtRetire.set(request.id, ok);
  });
  const dispose = () => {
    engine.dispose();
    cache.dispose();
  };
  return { cache, scheduler, steps, kvAtRetire, dispose };
}

function load(): RequestSpec[] {
  const system = Array.from({ length: 13 }, (_, i) => 900 + i);
  return Array.from({ length: 14 }, (_, id) => {
    const own = Array.from({ length: 3 + ((id * 7) % 40) }, (_, i) => 1000 * id + i);
    if (id % 2 === 0) return { id, prompt: [...system, ...own], maxTokens: 2 + (id % 5) };
    if (id % 5 === 1) return { id, promptLength: own.length, maxTokens: 4 };
    return { id, prompt: own, maxTokens: 1 + (id % 7) };
  });
}

async function serve(maxBatchedTokens: number | undefined, speculate?: Speculation) {
  const s = setup(maxBatchedTokens, speculate);
  try {
    const handles = load().map((spec) => s.scheduler.submit(spec));
    await s.scheduler.run({ untilIdle: true });
    const results = await Promise.all(handles.map((h) => h.settled));
    return { ...s, results, stats: s.cache.stats(), speculation: s.scheduler.speculation, steps: s.steps };
  } finally {
    s.dispose();
  }
}

describe("chunked prefill (maxBatchedTokens)", () => {
  test("tokens equal an unchunked run's; the budget holds; chunks mix with decode rows; K/V match the model", async () => {
    const whole = await serve(undefined);
    const chunked = await serve(24);
    expect(chunked.results.map((r) => r.tokens)).toEqual(whole.results.map((r) => r.tokens));
    expect(chunked.results.every((r) => r.outcome === "finished")).toBe(true);
    expect([...chunked.kvAtRetire.values()].every(Boolean)).toBe(true);
    expect(chunked.kvAtRetire.size).toBe(14);
    expect(chunked.stats.pagesUsed).toBe(0);
    const tokensPerStep = chunked.steps.map((st) => st.rows.reduce((n, r) => n + r.n, 0));
    expect(Math.max(...tokensPerStep)).toBeLessThanOrEqual(24);
    expect(Math.max(...tokensPerStep)).toBe(24); // the budget is used
    // Some step runs a prompt chunk (n > 1) beside decode rows (n = 1), and some prompt spans several chunks.
    expect(chunked.steps.some((st) => st.rows.some((r) => r.n > 1) && st.rows.some((r) => r.n === 1))).toBe(true);
    const chunksOf = new Map<number, number>();
    for (const st of chunked.steps)
      for (const r of st.rows) if (r.n > 1) chunksOf.set(r.id, (chunksOf.get(r.id) ?? 0) + 1);
    expect(Math.max(...chunksOf.values())).toBeGreaterThan(1);
  });

  test("a prefix hit's suffix is prefilled through the engine from the hit on", async () => {
    const chunked = await serve(64);
    const hits = chunked.results.filter((r) => r.prefixHitTokens > 0);
    expect(hits.length).toBeGreaterThan(0);
    for (const hit of hits) {
      const first = chunked.steps.flatMap((st) => st.rows).find((r) => r.id === hit.id)!;
      expect(first.from).toBe(hit.prefixHitTokens); // its first query token is the first one not cached
    }
  });

  test("a budget under maxBatch, or a runner without decodeChunks, is refused", () => {
    const cache = new KVCache(rt, { ...SHAPE, numPages: 16, dtype: "f16", maxSequences: 4 });
    try {
      const runner = { prefill: () => {}, decode: async () => ({ tokens: [], kernel: "", planMs: 0 }) };
      expect(() => new Scheduler({ cache, runner, maxBatch: 4, maxBatchedTokens: 8 })).toThrow(/decodeChunks/);
      expect(
        () =>
          new Scheduler({
            cache,
            runner: { ...runner, decodeChunks: runner.decode },
            maxBatch: 4,
            maxBatchedTokens: 3,
          }),
      ).toThrow(InvalidArgumentError);
    } finally {
      cache.dispose();
    }
  });
});

describe("speculative decoding (speculate)", () => {
  test("verified drafts give exactly the tokens of plain decoding, in fewer steps; rejected drafts roll back", async () => {
    const plain = await serve(undefined);
    const truth = new Map(plain.results.map((r) => [r.id, r.tokens]));
    // Drafts from the true continuation, wrong at every third position: some rows accept all, some none.
    const speculate: Speculation = {
      maxDraftTokens: 4,
      draft(request, count) {
        const next = truth.get(request.id)!.slice(request.generated, request.generated + count);
        return next.map((t, j) => ((request.generated + j) % 3 === 2 ? (t + 1) % 32000 : t));
      },
    };
    for (const budget of [undefined, 24]) {
      const spec = await serve(budget, speculate);
      expect(spec.results.map((r) => r.tokens)).toEqual(plain.results.map((r) => r.tokens));
      expect([...spec.kvAtRetire.values()].every(Boolean)).toBe(true);
      expect(spec.stats.pagesUsed).toBe(0);
      expect(spec.speculation.accepted).toBeGreaterThan(0);
      expect(spec.speculation.drafted).toBeGreaterThan(spec.speculation.accepted);
      const unspeculated = budget ? (await serve(budget)).scheduler.totals.steps : plain.scheduler.totals.steps;
      expect(spec.scheduler.totals.steps).toBeLessThan(unspeculated);
      if (budget)
        expect(Math.max(...spec.steps.map((st) => st.rows.reduce((n, r) => n + r.n, 0)))).toBeLessThanOrEqual(24);
    }
  });
  test("a draft source that returns no array fails its request with a typed error; the others finish", async () => {
    const speculate: Speculation = {
      maxDraftTokens: 2,
      draft: (request) => (request.id === 3 ? (null as unknown as number[]) : []),
    };
    const s = await serve(undefined, speculate);
    expect(s.results[3]!.outcome).toBe("failed");
    expect(s.results[3]!.error).toBeInstanceOf(ModelOutputError);
    expect(s.results.filter((r) => r.outcome === "finished").length).toBe(13);
  });
});
