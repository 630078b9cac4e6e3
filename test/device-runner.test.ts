// The device path on the CPU backend (host memory standing in for device memory): the synthetic model's
// native entry points reproduce SyntheticModel bit for bit, and DeviceStepRunner's tokens and K/V equal
// the host path's (SyntheticModel, host arrays, engine.run per layer) on a schedule with prefix sharing,
// prompts known only by length, and requests joining and leaving.
import { afterAll, describe, expect, test } from "bun:test";
import {
  type ActiveRequest,
  BadStateError,
  DeviceStepRunner,
  InvalidArgumentError,
  OutOfRangeError,
  STEP_ROW_INTS,
  Status,
  SyntheticDeviceModel,
  SyntheticModel,
  UnsupportedError,
  openRuntime,
  writeStepRow,
} from "../lib/index.ts";
import {
  HostLoop,
  drive,
  expectSameRuns,
  expectSameScheduled,
  mixedArrivals,
  runScheduled,
} from "./support/serving.ts";

const rt = openRuntime({ backend: "cpu" });
afterAll(() => rt.dispose());

const SHAPE = { numLayers: 3, numQoHeads: 4, numKvHeads: 2, headDim: 64, dtype: "f16" as const, vocab: 500 };
const PAGE = 4;

function stack(dtype: "f16" | "bf16" = "f16") {
  const cache = rt.createKVCache({ ...SHAPE, dtype, numPages: 64, pageSize: PAGE, maxSequences: 16 });
  const engine = rt.createDecodeEngine({ cache, numQoHeads: SHAPE.numQoHeads, maxBatch: 8 });
  const host = new SyntheticModel({ ...SHAPE, dtype });
  return { cache, engine, host };
}

const request = (id: number, tokens: number[], contextLength: number): ActiveRequest => ({
  id,
  tokens,
  promptLength: tokens.length,
  generated: 0,
  contextLength,
});

describe("synthetic model on the device", () => {
  for (const dtype of ["f16", "bf16"] as const)
    test(`forward, prefill and sample equal SyntheticModel's bits (${dtype})`, () => {
      const { cache, engine, host } = stack(dtype);
      using model = new SyntheticDeviceModel(rt, host);
      const batch = [request(3, [9, 4, 2], 2), request(2 ** 30 + 5, [-1, -1], 1), request(8, [-1, 77], 1)];
      const seqs = batch.map(() => cache.createSequence());
      const slots = seqs.map((s, i) => cache.append(s, batch[i]!.contextLength + 1));
      const rowsHost = new Int32Array(16 * STEP_ROW_INTS);
      using rows = rt.allocDevice(rowsHost.byteLength);
      // Prefill: every context token of every request, in one call.
      let n = 0;
      batch.forEach((r, i) => {
        for (let p = 0; p < r.contextLength; p++) writeStepRow(rowsHost, n++, r.id, p, r.tokens[p]!, slots[i]![p]!);
      });
      rows.write(rowsHost);
      model.prefill({ batch: n, rows, cache });
      // A decode layer: q and the new token's K/V, then the tokens.
      batch.forEach((r, i) =>
        writeStepRow(rowsHost, i, r.id, r.contextLength, r.tokens[r.contextLength]!, slots[i]!.at(-1)!),
      );
      rows.write(rowsHost);
      const qElems = SHAPE.numQoHeads * SHAPE.headDim;
      using q = rt.allocDevice(batch.length * qElems * 2);
      using tokens = rt.allocDevice(batch.length * 4);
      for (let layer = 0; layer < SHAPE.numLayers; layer++) {
        model.forward({ batch: batch.length, rows, cache }, layer, null, q);
        const got = new Uint16Array(batch.length * qElems);
        q.read(got);
        const kvElems = SHAPE.numKvHeads * SHAPE.headDim;
        const want = new Uint16Array(got.length);
        host.forward(
          batch,
          layer,
          null,
          want,
          new Uint16Array(batch.length * kvElems),
          new Uint16Array(batch.length * kvElems),
        );
        expect(Buffer.from(got.buffer).equals(Buffer.from(want.buffer))).toBe(true);
      }
      model.sample({ batch: batch.length, rows, cache }, q, tokens);
      const sampled = new Int32Array(batch.length);
      tokens.read(sampled);
      expect(Array.from(sampled)).toEqual(host.sample(batch, new Uint16Array(0)));
      // Every token's K/V in every layer, as the host model computes them.
      batch.forEach((r, i) => {
        for (let layer = 0; layer < SHAPE.numLayers; layer++) {
          const { k, v } = cache.readKV(layer, seqs[i]!);
          const len = r.contextLength + 1;
          const wantK = new Uint16Array(k.length),
            wantV = new Uint16Array(v.length);
          host.prefill(r, layer, 0, len, wantK, wantV);
          expect(Buffer.from(k.buffer).equals(Buffer.from(wantK.buffer))).toBe(true);
          expect(Buffer.from(v.buffer).equals(Buffer.from(wantV.buffer))).toBe(true);
        }
      });
      engine.dispose();
      cache.dispose();
    });

  test("a row whose slot is outside the pool is skipped; bad arguments are typed errors", () => {
    const { cache, engine, host } = stack();
    using model = new SyntheticDeviceModel(rt, host);
    const seq = cache.createSequence();
    const [slot] = cache.append(seq, 1);
    const before = cache.readKV(0, seq);
    using rows = rt.allocDevice(2 * 16);
    rows.write(Int32Array.from([1, 0, 5, 64 * PAGE, 1, 0, 5, -3])); // both slots outside the pool
    using q = rt.allocDevice(2 * SHAPE.numQoHeads * SHAPE.headDim * 2);
    model.forward({ batch: 2, rows, cache }, 0, null, q);
    model.prefill({ batch: 2, rows, cache });
    expect(cache.readKV(0, seq)).toEqual(before);
    expect(slot).toBe(0);
    const step = { batch: 2, rows, cache };
    expect(() => model.forward(step, 3, null, q)).toThrow(OutOfRangeError);
    expect(() => model.forward(step, -1, null, q)).toThrow(InvalidArgumentError);
    expect(() => model.forward({ batch: 3, rows, cache }, 0, null, q)).toThrow(OutOfRangeError); // rows too short
    expect(() => model.forward(step, 0, null, rows)).toThrow(OutOfRangeError); // q too short
    expect(() => model.forward(step, 0, null, {} as never)).toThrow(InvalidArgumentError);
    expect(() => model.sample(step, q, q)).not.toThrow();
    expect(() => model.sample(step, q, rows)).toThrow(InvalidArgumentError); // tokens overlap the rows
    const other = rt.createKVCache({ ...SHAPE, headDim: 128, numPages: 8, pageSize: PAGE });
    expect(() => model.forward({ batch: 2, rows, cache: other }, 0, null, q)).toThrow(InvalidArgumentError);
    other.dispose();
    engine.dispose();
    cache.dispose();
    expect(() => model.forward(step, 0, null, q)).toThrow(BadStateError); // the cache is disposed
  });
});

describe("DeviceStepRunner on the CPU backend", () => {
  test("tokens and K/V equal the host path's bit for bit", async () => {
    const host = stack();
    const device = stack();
    using model = new SyntheticDeviceModel(rt, device.host);
    using runner = new DeviceStepRunner({ runtime: rt, cache: device.cache, engine: device.engine, model });
    const arrivals = mixedArrivals(PAGE);
    const want = await drive(host.cache, new HostLoop(host.cache, host.engine, host.host), arrivals);
    const got = await drive(device.cache, runner, arrivals);
    expect(want.tokens.length).toBeGreaterThan(8);
    expect(host.cache.stats().prefixHitTokens ?? 0).toEqual(device.cache.stats().prefixHitTokens ?? 0);
    expectSameRuns(got, want);
    expect(runner.stats).toMatchObject({ steps: want.tokens.length, direct: want.tokens.length, captures: 0 });
    expect(runner.graphsEnabled).toBe(false); // the CPU backend has no graphs
    for (const s of [host, device]) {
      s.engine.dispose();
      s.cache.dispose();
    }
  });

  test("a capture the runtime refuses: graphs are given up, every step runs directly, same bits", async () => {
    const host = stack();
    const device = stack();
    using model = new SyntheticDeviceModel(rt, device.host);
    // A runtime that claims CUDA but refuses every capture, over the CPU backend's memory.
    const refusing = {
      backend: "cuda" as const,
      allocDevice: (bytes: number) => rt.allocDevice(bytes),
      allocPinned: (bytes: number) => rt.allocPinned(bytes),
      createEvent: () => rt.createEvent(),
      capture: (): never => {
        throw new UnsupportedError(Status.UNSUPPORTED, "capture refused");
      },
    };
    using runner = new DeviceStepRunner({ runtime: refusing, cache: device.cache, engine: device.engine, model });
    const arrivals = mixedArrivals(PAGE);
    const want = await drive(host.cache, new HostLoop(host.cache, host.engine, host.host), arrivals);
    const got = await drive(device.cache, runner, arrivals);
    expectSameRuns(got, want);
    expect(runner.graphsEnabled).toBe(true);
    expect(runner.stats).toMatchObject({
      captures: 0,
      replays: 0,
      direct: want.tokens.length,
      captureError: "capture refused",
    });
    for (const s of [host, device]) {
      s.engine.dispose();
      s.cache.dispose();
    }
  });

  test("misuse: a typed error and nothing changed", async () => {
    const { cache, engine, host } = stack();
    using model = new SyntheticDeviceModel(rt, host);
    const runner = new DeviceStepRunner({ runtime: rt, cache, engine, model, maxBatch: 2 });
    const seq = cache.createSequence();
    const slots = cache.append(seq, 1);
    const r = request(1, [4], 0);
    const before = cache.readKV(0, seq);
    await expect(runner.decode([r, r, r], [seq, seq, seq], Int32Array.of(0, 0, 0))).rejects.toThrow(
      InvalidArgumentError,
    );
    await expect(runner.decode([r], [], slots)).rejects.toThrow(InvalidArgumentError);
    expect(() => runner.prefill(r, seq, new Int32Array(2), 0, 1)).toThrow(InvalidArgumentError);
    expect(() => new DeviceStepRunner({ runtime: rt, cache, engine, model, maxBatch: 9 })).toThrow(
      InvalidArgumentError,
    );
    const wrong = new SyntheticModel({ ...SHAPE, numLayers: 2 });
    expect(
      () => new DeviceStepRunner({ runtime: rt, cache, engine, model: new SyntheticDeviceModel(rt, wrong) }),
    ).toThrow(InvalidArgumentError);
    expect(cache.readKV(0, seq)).toEqual(before);
    expect(runner.stats.steps).toBe(0);
    const { tokens } = await runner.decode([r], [seq], slots);
    expect(Array.from(tokens)).toEqual([host.token(1, 0)]);
    runner.dispose();
    await expect(runner.decode([r], [seq], slots)).rejects.toThrow(BadStateError);
    engine.dispose();
    cache.dispose();
  });

  test("a second decode while one is in flight is refused", async () => {
    const { cache, engine, host } = stack();
    using model = new SyntheticDeviceModel(rt, host);
    using runner = new DeviceStepRunner({ runtime: rt, cache, engine, model });
    const seq = cache.createSequence();
    const slots = cache.append(seq, 1);
    const r = request(1, [4], 0);
    const first = runner.decode([r], [seq], slots);
    await expect(runner.decode([r], [seq], slots)).rejects.toThrow(BadStateError);
    await first;
    engine.dispose();
    cache.dispose();
  });
});

describe("DeviceStepRunner under the Scheduler", () => {
  test("results and K/V equal the host path's, with preemption by swap and recompute", async () => {
    // A pool too small for the load: short prompts and long outputs, admitted together, outgrow it as they
    // decode; requests are swapped out and recomputed, and both paths must agree.
    // Ids past the synthetic vocab: like SyntheticModel, the device model limits sampled tokens, not prompts.
    const system = Array.from({ length: 2 * PAGE }, (_, i) => 100_000 + i);
    const specs = Array.from({ length: 10 }, (_, i) =>
      i % 3 === 2
        ? { promptLength: 3 + i, maxTokens: 18 + (i % 4), id: 100 + i }
        : { prompt: [...system, 10 + i, 20 + i], maxTokens: 14 + (i % 5), id: 100 + i },
    );
    const pool = { numPages: 24, pageSize: PAGE, maxSequences: 32, swapPages: 6 };
    const want = await runScheduled(rt, false, SHAPE, pool, 8, specs);
    const got = await runScheduled(rt, true, SHAPE, pool, 8, specs);
    expect(want.totals.preemptedBySwap).toBeGreaterThan(0);
    expect(want.totals.preemptedByRecompute).toBeGreaterThan(0);
    expectSameScheduled(got, want);
  });
});

describe("Event.query and Event.done", () => {
  test("on the CPU backend an event is always complete", async () => {
    using event = rt.createEvent();
    expect(event.query()).toBe(true);
    event.record();
    expect(event.query()).toBe(true);
    await event.done();
    event.dispose();
    expect(() => event.query()).toThrow(BadStateError);
    await expect(event.done()).rejects.toThrow(BadStateError);
  });
});
