// The CUDA backend on a real device: device info, the bandwidth probe, the L2 flush, and exact
// pinned <-> device round trips. Skips (visibly) without a device; fails with PKV_REQUIRE_GPU=1.
// The H100's ">= 2.9 TB/s" target is checked by bench/probe.ts, not here: a timed threshold in a test
// would fail on smaller GPUs and under load, so this only asks for a plausible number.
import { expect, test } from "bun:test";
import * as pkv from "../../lib/index.ts";
import { describeGpu } from "../support/gpu.ts";

describeGpu("CUDA runtime", () => {
  test('"auto" picks cuda and the device info is filled in', () => {
    using rt = pkv.openRuntime({ backend: "auto" });
    expect(rt.backend).toBe("cuda");
    const info = rt.info;
    expect(info.backend).toBe("cuda");
    expect(info.name.length).toBeGreaterThan(0);
    expect(info.device).toBe(0);
    expect(info.multiprocessors).toBeGreaterThan(0);
    expect(info.computeCapability[0]).toBeGreaterThanOrEqual(8); // the build targets sm_80 and newer
    expect(info.l2Bytes).toBeGreaterThan(0);
    expect(info.totalMemory).toBeGreaterThan(0);
    expect(info.maxSharedPerBlock).toBeGreaterThan(48 * 1024); // opt-in limit exceeds the 48 KiB default
    expect(info.maxThreadsPerSM).toBeGreaterThanOrEqual(1024);
    console.log(
      `device: ${info.name}, ${info.multiprocessors} SMs, cc ${info.computeCapability.join(".")}, ` +
        `L2 ${(info.l2Bytes / 2 ** 20).toFixed(0)} MiB, ${(info.totalMemory / 2 ** 30).toFixed(1)} GiB`,
    );
  });

  test("the streaming-read probe on 1 GiB gives a plausible bandwidth", () => {
    using rt = pkv.openRuntime({ backend: "cuda" });
    const gbps = rt.probeReadBandwidth({ bytes: 2 ** 30, iterations: 10 });
    console.log(`read bandwidth: ${gbps.toFixed(1)} GB/s`);
    expect(gbps).toBeGreaterThan(100); // any HBM or GDDR6 GPU of sm_80+; far below is a broken probe
    expect(gbps).toBeLessThan(20_000); // above any GPU memory: the timing would be wrong
  });

  test("flushL2 runs on the runtime's stream and on a stream of its own", () => {
    using rt = pkv.openRuntime({ backend: "cuda" });
    using stream = rt.createStream();
    rt.flushL2();
    rt.flushL2(stream);
    stream.synchronize();
    rt.synchronize();
  });

  test("64 MiB pinned -> device -> pinned round trip is exact", () => {
    using rt = pkv.openRuntime({ backend: "cuda" });
    const bytes = 64 << 20;
    using src = rt.allocPinned(bytes);
    using dev = rt.allocDevice(bytes);
    using dst = rt.allocPinned(bytes);
    const words = src.view(Uint32Array);
    for (let i = 0; i < words.length; i++) words[i] = Math.imul(i, 2654435761) ^ (i >>> 7);
    dst.fill(0);
    dev.copyFrom(src);
    dst.copyFrom(dev);
    rt.synchronize();
    expect(Buffer.compare(dst.view(Uint8Array), src.view(Uint8Array))).toBe(0);
  });

  test("64 MiB host array -> device -> host array, and a device fill, are exact", () => {
    using rt = pkv.openRuntime({ backend: "cuda" });
    const bytes = 64 << 20;
    using dev = rt.allocDevice(bytes);
    const data = new Uint8Array(bytes);
    for (let i = 0; i < bytes; i += 4096) data.fill(i / 4096, i, i + 4096);
    dev.write(data);
    const back = new Uint8Array(bytes);
    dev.read(back);
    expect(Buffer.compare(back, data)).toBe(0);
    dev.fill(0x5a, { offset: 1 << 20, bytes: 1 << 20 });
    dev.read(back);
    data.fill(0x5a, 1 << 20, 2 << 20);
    expect(Buffer.compare(back, data)).toBe(0);
  });

  test("a captured graph replays its copies with the data present at launch", () => {
    using rt = pkv.openRuntime({ backend: "cuda" });
    using stream = rt.createStream();
    using a = rt.allocDevice(1 << 20);
    using b = rt.allocDevice(1 << 20);
    a.fill(1);
    b.fill(0);
    rt.synchronize();
    using graph = rt.capture(() => b.copyFrom(a, { stream }), stream);
    const back = new Uint8Array(1 << 20);
    b.read(back);
    expect(back.every((x) => x === 0)).toBe(true); // recorded, not run
    a.fill(7);
    rt.synchronize();
    graph.launch(stream);
    stream.synchronize();
    b.read(back);
    expect(back.every((x) => x === 7)).toBe(true);
  });

  test("events time GPU work on a stream", () => {
    using rt = pkv.openRuntime({ backend: "cuda" });
    using stream = rt.createStream();
    using a = rt.allocDevice(256 << 20);
    using b = rt.allocDevice(256 << 20);
    using start = rt.createEvent();
    using end = rt.createEvent();
    start.record(stream);
    b.copyFrom(a, { stream });
    end.record(stream);
    end.synchronize();
    const ms = end.elapsedSince(start);
    expect(ms).toBeGreaterThan(0); // 512 MiB of traffic takes well over a microsecond
    expect(ms).toBeLessThan(1000);
  });
});
