// The device path on the GPU: DeviceStepRunner (synthetic model kernels, K/V appended on the GPU, steps
// captured as graphs and replayed with new plans and rows) against the host path (SyntheticModel, host
// arrays, engine.run per layer) bit for bit, for both kernels, directly and through the Scheduler; and
// Event.query/done on pending GPU work.
import { afterAll, expect, test } from "bun:test";
import { DeviceStepRunner, type Runtime, SyntheticDeviceModel, SyntheticModel, openRuntime } from "../../lib/index.ts";
import { describeGpu } from "../support/gpu";
import {
  type Arrival,
  HostLoop,
  drive,
  expectSameRuns,
  expectSameScheduled,
  mixedArrivals,
  runScheduled,
} from "../support/serving.ts";

const SHAPE = { numLayers: 4, numQoHeads: 32, numKvHeads: 8, headDim: 128, dtype: "f16" as const, vocab: 32000 };
const PAGE = 16;

describeGpu("device path on the GPU", () => {
  let rt: Runtime;
  const runtime = () => (rt ??= openRuntime({ backend: "cuda" }));
  afterAll(() => rt?.dispose());

  const stack = (policy: "baseline" | "persistent" | "adaptive", r = runtime()) => {
    const cache = r.createKVCache({ ...SHAPE, numPages: 1024, pageSize: PAGE, maxSequences: 64 });
    const engine = r.createDecodeEngine({ cache, numQoHeads: SHAPE.numQoHeads, maxBatch: 32, policy });
    return {
      cache,
      engine,
      dispose: () => {
        engine.dispose();
        cache.dispose();
      },
    };
  };

  // Longer contexts than the CPU test's, so that rows split and steps reach both kernels.
  const arrivals = (): Arrival[] => [
    ...mixedArrivals(PAGE),
    { step: 1, id: 20, prompt: 1500, maxTokens: 12 },
    { step: 4, id: 21, prompt: Array.from({ length: 700 }, (_, i) => 5000 + i), maxTokens: 9 },
    ...Array.from({ length: 12 }, (_, i) => ({ step: 2 + (i % 3), id: 30 + i, prompt: 40 + 37 * i, maxTokens: 10 })),
  ];

  for (const policy of ["baseline", "persistent", "adaptive"] as const)
    test(`tokens and K/V equal the host path's, graphs replayed (${policy})`, async () => {
      const host = stack(policy);
      const device = stack(policy);
      const model = new SyntheticDeviceModel(runtime(), new SyntheticModel(SHAPE));
      const runner = new DeviceStepRunner({
        runtime: runtime(),
        cache: device.cache,
        engine: device.engine,
        model,
        captureAfter: 1, // every shape after the first step is captured when first seen, replayed when it recurs
      });
      try {
        const want = await drive(
          host.cache,
          new HostLoop(host.cache, host.engine, new SyntheticModel(SHAPE)),
          arrivals(),
        );
        const got = await drive(device.cache, runner, arrivals());
        expectSameRuns(got, want);
        expect(got.kernels).toEqual(want.kernels);
        expect(runner.graphsEnabled).toBe(true);
        expect(runner.stats.captureError).toBeUndefined();
        expect(runner.stats.captures).toBeGreaterThan(0);
        expect(runner.stats.replays).toBeGreaterThan(0);
        expect(runner.stats.captures + runner.stats.replays + runner.stats.direct).toBe(want.tokens.length);
      } finally {
        runner.dispose();
        model.dispose();
        host.dispose();
        device.dispose();
      }
    });

  test("with graphs off, and on the CPU backend, the device path gives the same bits", async () => {
    const cpu = openRuntime({ backend: "cpu" });
    const runs = [];
    for (const [r, graphs] of [
      [runtime(), false],
      [runtime(), true],
      [cpu, false],
    ] as const) {
      const s = stack("adaptive", r);
      const model = new SyntheticDeviceModel(r, new SyntheticModel(SHAPE));
      const runner = new DeviceStepRunner({ runtime: r, cache: s.cache, engine: s.engine, model, graphs });
      runs.push(await drive(s.cache, runner, mixedArrivals(PAGE)));
      runner.dispose();
      model.dispose();
      s.dispose();
    }
    cpu.dispose();
    expectSameRuns(runs[0]!, runs[1]!);
    expectSameRuns(runs[0]!, runs[2]!);
  });

  test("under the Scheduler: results and K/V equal the host path's, with preemption", async () => {
    const system = Array.from({ length: 3 * PAGE }, (_, i) => 900 + i);
    const specs = Array.from({ length: 16 }, (_, i) =>
      i % 4 === 3
        ? { promptLength: 20 + 9 * i, maxTokens: 40 + i, id: 200 + i }
        : { prompt: [...system, 10 + i, 20 + i], maxTokens: 30 + 3 * i, id: 200 + i },
    );
    const pool = { numPages: 48, pageSize: PAGE, maxSequences: 64, swapPages: 8 };
    const want = await runScheduled(runtime(), false, SHAPE, pool, 16, specs);
    const got = await runScheduled(runtime(), true, SHAPE, pool, 16, specs);
    expect(want.totals.preemptedBySwap + want.totals.preemptedByRecompute).toBeGreaterThan(0);
    expectSameScheduled(got, want);
    expect(got.stats!.replays).toBeGreaterThan(0);
  });

  test("Event.query is false while work is pending; done() resolves without blocking the event loop", async () => {
    const r = runtime();
    using event = r.createEvent();
    for (let i = 0; i < 400; i++) r.flushL2(); // each reads more than L2: milliseconds of GPU work in all
    event.record();
    expect(event.query()).toBe(false);
    let turns = 0;
    const ticker = setInterval(() => turns++, 0);
    await event.done();
    clearInterval(ticker);
    expect(event.query()).toBe(true);
    expect(turns).toBeGreaterThan(0);
  });
});
