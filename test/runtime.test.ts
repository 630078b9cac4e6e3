// openRuntime: backend choice, device info, lifetime, and streams/events timing on the CPU backend.
import { describe, expect, test } from "bun:test";
import * as pkv from "../lib/index.ts";

const hasGpu = pkv.cudaDeviceCount() > 0;

describe("openRuntime", () => {
  test(`"auto" picks ${hasGpu ? "cuda (a device is visible)" : "cpu (no device is visible)"}`, () => {
    using rt = pkv.openRuntime({ backend: "auto" });
    expect(rt.backend).toBe(hasGpu ? "cuda" : "cpu");
    expect(rt.info.backend).toBe(rt.backend);
    using implicit = pkv.openRuntime();
    expect(implicit.backend).toBe(rt.backend);
  });

  test.skipIf(hasGpu)('"cuda" without a device throws NoDeviceError', () => {
    expect(() => pkv.openRuntime({ backend: "cuda" })).toThrow(pkv.NoDeviceError);
    expect(() => pkv.openRuntime({ backend: "cuda" })).toThrow(/no CUDA device/);
  });

  test.skipIf(!hasGpu)('"cuda" with a device ordinal beyond the last throws OutOfRangeError', () => {
    expect(() => pkv.openRuntime({ backend: "cuda", device: pkv.cudaDeviceCount() })).toThrow(pkv.OutOfRangeError);
  });

  test("an unknown backend or a bad device ordinal throws InvalidArgumentError", () => {
    expect(() => pkv.openRuntime({ backend: "gpu" as "cpu" })).toThrow(pkv.InvalidArgumentError);
    expect(() => pkv.openRuntime({ backend: "gpu" as "cpu" })).toThrow(/"gpu"/);
    for (const device of [-1, 0.5, Number.NaN])
      expect(() => pkv.openRuntime({ backend: "cpu", device })).toThrow(pkv.InvalidArgumentError);
  });

  test("CPU device info", () => {
    using rt = pkv.openRuntime({ backend: "cpu" });
    expect(rt.backend).toBe("cpu");
    expect(rt.info.backend).toBe("cpu");
    expect(rt.info.name).toContain("CPU");
    expect(rt.info.device).toBe(0);
    expect(rt.info.multiprocessors).toBeGreaterThanOrEqual(1); // host threads
    expect(rt.info.computeCapability).toEqual([0, 0]);
  });

  test("`using` disposes at the end of the block; dispose twice is harmless", () => {
    let outer: pkv.Runtime;
    {
      using rt = pkv.openRuntime({ backend: "cpu" });
      outer = rt;
      expect(rt.disposed).toBe(false);
    }
    expect(outer.disposed).toBe(true);
    outer.dispose();
    expect(outer.disposed).toBe(true);
    expect(() => outer.synchronize()).toThrow(pkv.BadStateError);
  });

  test("several runtimes live side by side", () => {
    using a = pkv.openRuntime({ backend: "cpu" });
    using b = pkv.openRuntime({ backend: "cpu" });
    expect(a.handle).not.toBe(b.handle);
    a.dispose();
    b.synchronize(); // b is unaffected
    using buf = b.allocDevice(16);
    buf.write(new Uint8Array(16).fill(3));
    const back = new Uint8Array(16);
    buf.read(back);
    expect([...back]).toEqual(new Array(16).fill(3));
  });

  test("synchronize, flushL2 (a no-op on the CPU) and the bandwidth probe run on the CPU backend", () => {
    using rt = pkv.openRuntime({ backend: "cpu" });
    rt.synchronize();
    rt.flushL2();
    using stream = rt.createStream();
    rt.flushL2(stream);
    const gbps = rt.probeReadBandwidth({ bytes: 8 << 20, iterations: 3 });
    expect(Number.isFinite(gbps)).toBe(true);
    expect(gbps).toBeGreaterThan(0);
  });
});

test("graph capture is UnsupportedError on the CPU backend, and the runtime stays usable", () => {
  using rt = pkv.openRuntime({ backend: "cpu" });
  expect(() => rt.capture(() => {})).toThrow(pkv.UnsupportedError);
  rt.synchronize();
});

describe("streams and events (CPU backend)", () => {
  test("events time host work between their records", () => {
    using rt = pkv.openRuntime({ backend: "cpu" });
    using stream = rt.createStream();
    using start = rt.createEvent();
    using end = rt.createEvent();
    start.record(stream);
    const t0 = performance.now();
    while (performance.now() - t0 < 20); // 20 ms of host work
    end.record(stream);
    end.synchronize();
    stream.synchronize();
    const ms = end.elapsedSince(start);
    const wall = performance.now() - t0;
    expect(ms).toBeGreaterThanOrEqual(19);
    expect(ms).toBeLessThanOrEqual(wall + 1);
  });

  test("events on the runtime's own stream (no stream argument)", () => {
    using rt = pkv.openRuntime({ backend: "cpu" });
    using a = rt.createEvent();
    using b = rt.createEvent();
    a.record();
    b.record();
    expect(b.elapsedSince(a)).toBeGreaterThanOrEqual(0);
  });

  test("elapsed time of an event never recorded is BadStateError", () => {
    using rt = pkv.openRuntime({ backend: "cpu" });
    using a = rt.createEvent();
    using b = rt.createEvent();
    a.record();
    expect(() => b.elapsedSince(a)).toThrow(pkv.BadStateError);
    expect(() => b.elapsedSince(a)).toThrow(/never recorded/);
  });
});
