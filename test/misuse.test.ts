// Misuse gets a clear typed error and no crash, and leaves everything else as it was: a sentinel buffer
// (and its pinned view) made first must still hold its data after every case in this file.
import type { Pointer } from "bun:ffi";
import { afterAll, describe, expect, test } from "bun:test";
import * as pkv from "../lib/index.ts";
import { DEVICE_INFO } from "../lib/ffi/layouts.ts";
import { native } from "../lib/ffi/loader.ts";

const rt = pkv.openRuntime({ backend: "cpu" });
const sentinel = rt.allocPinned(4096);
const sentinelView = sentinel.view(Uint8Array);
for (let i = 0; i < 4096; i++) sentinelView[i] = (i * 31 + 7) & 0xff;
const sentinelCopy = sentinelView.slice();

function expectSentinelIntact(): void {
  const back = new Uint8Array(4096);
  sentinel.read(back);
  expect(back).toEqual(sentinelCopy);
  expect(sentinelView).toEqual(sentinelCopy);
}

// A raw call's status, and the message pkv_last_error leaves for it.
function raw(call: () => number): { status: number; message: string } {
  const status = call();
  return { status, message: String(native().pkv_last_error()) };
}

const S = pkv.Status;
const out = () => new BigUint64Array(1);

describe("raw ABI: handles are checked, never dereferenced blindly", () => {
  test("NULL, unknown and wrong-kind handles are PKV_ERR_INVALID_HANDLE", () => {
    using stream = rt.createStream();
    const cases: [string, () => number][] = [
      ["pkv_buffer_free(NULL)", () => native().pkv_buffer_free(null)],
      ["pkv_buffer_free(0x1234)", () => native().pkv_buffer_free(0x1234 as Pointer)],
      ["pkv_buffer_free(runtime)", () => native().pkv_buffer_free(rt.handle)],
      ["pkv_runtime_destroy(buffer)", () => native().pkv_runtime_destroy(sentinel.handle)],
      ["pkv_runtime_synchronize(stream)", () => native().pkv_runtime_synchronize(stream.handle)],
      ["pkv_stream_destroy(NULL)", () => native().pkv_stream_destroy(null)],
      ["pkv_event_record(stream, NULL)", () => native().pkv_event_record(stream.handle, null)],
      ["pkv_buffer_alloc(NULL runtime)", () => native().pkv_buffer_alloc(null, 0, 16, out())],
      ["pkv_buffer_copy(.., src = runtime)", () => native().pkv_buffer_copy(sentinel.handle, 0, rt.handle, 0, 1, null)],
      ["pkv_buffer_fill(.., stream = buffer)", () => native().pkv_buffer_fill(sentinel.handle, 0, 0, 1, sentinel.handle)],
      ["pkv_device_info_get(NULL)", () => native().pkv_device_info_get(null, DEVICE_INFO.alloc())],
    ];
    for (const [what, call] of cases) {
      const r = raw(call);
      expect(r.status, what).toBe(S.INVALID_HANDLE);
      expect(r.message, what).toMatch(/is NULL|is not a live/);
    }
    expectSentinelIntact(); // the fill with a bogus stream must not have run
  });

  test("double free: the second pkv_buffer_free is PKV_ERR_INVALID_HANDLE", () => {
    const o = out();
    expect(native().pkv_buffer_alloc(rt.handle, 0, 64, o)).toBe(S.OK);
    const handle = Number(o[0]) as Pointer;
    expect(raw(() => native().pkv_buffer_free(handle)).status).toBe(S.OK);
    const second = raw(() => native().pkv_buffer_free(handle));
    expect(second.status).toBe(S.INVALID_HANDLE);
    expect(second.message).toContain("pkv_buffer_free");
    expect(raw(() => native().pkv_buffer_write(handle, 0, new Uint8Array(4), 4)).status).toBe(S.INVALID_HANDLE);
    expectSentinelIntact();
  });

  test("double destroy of streams, events and runtimes", () => {
    const o = out();
    expect(native().pkv_stream_create(rt.handle, o)).toBe(S.OK);
    const stream = Number(o[0]) as Pointer;
    expect(native().pkv_stream_destroy(stream)).toBe(S.OK);
    expect(native().pkv_stream_destroy(stream)).toBe(S.INVALID_HANDLE);
    expect(native().pkv_event_create(rt.handle, o)).toBe(S.OK);
    const event = Number(o[0]) as Pointer;
    expect(native().pkv_event_destroy(event)).toBe(S.OK);
    expect(native().pkv_event_destroy(event)).toBe(S.INVALID_HANDLE);
    expect(native().pkv_runtime_create(0, 0, o)).toBe(S.OK);
    const other = Number(o[0]) as Pointer;
    expect(native().pkv_runtime_destroy(other)).toBe(S.OK);
    expect(native().pkv_runtime_destroy(other)).toBe(S.INVALID_HANDLE);
    expectSentinelIntact();
  });

  test("NULL out-parameters and host pointers are PKV_ERR_NULL_POINTER", () => {
    const cases: [string, () => number][] = [
      ["pkv_runtime_create(.., NULL)", () => native().pkv_runtime_create(0, 0, null)],
      ["pkv_buffer_alloc(.., NULL)", () => native().pkv_buffer_alloc(rt.handle, 0, 16, null)],
      ["pkv_buffer_address(.., NULL)", () => native().pkv_buffer_address(sentinel.handle, null)],
      ["pkv_buffer_write(src NULL)", () => native().pkv_buffer_write(sentinel.handle, 0, null, 16)],
      ["pkv_buffer_read(dst NULL)", () => native().pkv_buffer_read(sentinel.handle, 0, null, 16)],
      ["pkv_device_info_get(.., NULL)", () => native().pkv_device_info_get(rt.handle, null)],
      ["pkv_probe_read_bandwidth(.., NULL)", () => native().pkv_probe_read_bandwidth(rt.handle, 1 << 20, 1, null)],
    ];
    for (const [what, call] of cases) {
      const r = raw(call);
      expect(r.status, what).toBe(S.NULL_POINTER);
      expect(r.message, what).toContain("is NULL");
    }
    expectSentinelIntact();
  });

  test("bad enum values are PKV_ERR_INVALID_ARGUMENT", () => {
    for (const backend of [-1, 2, 7]) {
      const r = raw(() => native().pkv_runtime_create(backend, 0, out()));
      expect(r.status).toBe(S.INVALID_ARGUMENT);
      expect(r.message).toContain(`backend ${backend}`);
    }
    for (const kind of [-1, 2, 5]) {
      const r = raw(() => native().pkv_buffer_alloc(rt.handle, kind, 16, out()));
      expect(r.status).toBe(S.INVALID_ARGUMENT);
      expect(r.message).toContain(`kind ${kind}`);
    }
    expect(raw(() => native().pkv_buffer_fill(sentinel.handle, 0, 256, 1, null)).status).toBe(S.INVALID_ARGUMENT);
    expectSentinelIntact();
  });

  test("a successful call clears the last error", () => {
    expect(native().pkv_buffer_free(null)).toBe(S.INVALID_HANDLE);
    expect(String(native().pkv_last_error())).not.toBe("");
    expect(native().pkv_runtime_synchronize(rt.handle)).toBe(S.OK);
    expect(String(native().pkv_last_error())).toBe("");
  });
});

describe("typed errors from the TypeScript API", () => {
  test("wrong sizes: allocation of 0, negative, fractional, NaN or unsafe bytes", () => {
    for (const bytes of [0, -1, 1.5, Number.NaN, 2 ** 53])
      for (const alloc of [(n: number) => rt.allocDevice(n), (n: number) => rt.allocPinned(n)])
        expect(() => alloc(bytes)).toThrow(pkv.InvalidArgumentError);
    expectSentinelIntact();
  });

  test("an allocation larger than memory is OutOfMemoryError", () => {
    expect(() => rt.allocDevice(2 ** 52)).toThrow(pkv.OutOfMemoryError);
    expectSentinelIntact();
  });

  test("out-of-range offsets and sizes are OutOfRangeError and change nothing", () => {
    using buf = rt.allocDevice(100);
    buf.write(new Uint8Array(100).fill(9));
    const cases: [string, () => void][] = [
      ["write past the end", () => buf.write(new Uint8Array(10), 95)],
      ["write at the end + 1", () => buf.write(new Uint8Array(1), 100)],
      ["write larger than the buffer", () => buf.write(new Uint8Array(101))],
      ["read past the end", () => buf.read(new Uint8Array(10), 91)],
      ["read from beyond the end", () => buf.read(new Uint8Array(1), 1000)],
      ["fill past the end", () => buf.fill(1, { offset: 50, bytes: 51 })],
      ["fill from beyond the end", () => buf.fill(1, { offset: 101 })],
      ["copy past the source's end", () => buf.copyFrom(sentinel, { srcOffset: 4090, bytes: 10 })],
      ["copy past the destination's end", () => buf.copyFrom(sentinel, { dstOffset: 95, bytes: 10 })],
      ["view beyond the end", () => sentinel.view(Uint32Array, 0, 1025)],
      ["view from beyond the end", () => sentinel.view(Uint8Array, 4097)],
    ];
    for (const [what, call] of cases) {
      expect(call, what).toThrow(pkv.OutOfRangeError);
      try {
        call();
      } catch (e) {
        expect((e as Error).message, what).toMatch(/exceeds/);
      }
    }
    const back = new Uint8Array(100);
    buf.read(back);
    expect(back).toEqual(new Uint8Array(100).fill(9));
    expectSentinelIntact();
  });

  test("bad offsets, sizes and fill values are InvalidArgumentError", () => {
    using buf = rt.allocDevice(100);
    const cases: [string, () => void][] = [
      ["negative write offset", () => buf.write(new Uint8Array(1), -1)],
      ["fractional write offset", () => buf.write(new Uint8Array(1), 1.5)],
      ["NaN read offset", () => buf.read(new Uint8Array(1), Number.NaN)],
      ["negative copy size", () => buf.copyFrom(sentinel, { bytes: -1 })],
      ["fill value 256", () => buf.fill(256)],
      ["fill value -1", () => buf.fill(-1)],
      ["fill value 1.5", () => buf.fill(1.5)],
      ["source not a typed array", () => buf.write(null as unknown as Uint8Array)],
      ["view offset not a multiple of the element size", () => sentinel.view(Float32Array, 2)],
      ["probe smaller than 1 MiB", () => rt.probeReadBandwidth({ bytes: 1000 })],
      ["probe with 0 iterations", () => rt.probeReadBandwidth({ bytes: 1 << 20, iterations: 0 })],
    ];
    for (const [what, call] of cases) expect(call, what).toThrow(pkv.InvalidArgumentError);
    expectSentinelIntact();
  });

  test("a copy between buffers of two runtimes is InvalidArgumentError", () => {
    using other = pkv.openRuntime({ backend: "cpu" });
    using foreign = other.allocDevice(16);
    expect(() => foreign.copyFrom(sentinel, { bytes: 16 })).toThrow(pkv.InvalidArgumentError);
    expect(() => foreign.copyFrom(sentinel, { bytes: 16 })).toThrow(/two runtimes/);
    expectSentinelIntact();
  });

  test("a stream of another runtime is InvalidArgumentError for copies, fills and events", () => {
    using other = pkv.openRuntime({ backend: "cpu" });
    using foreignStream = other.createStream();
    using copy = rt.allocDevice(16);
    using event = rt.createEvent();
    expect(() => copy.copyFrom(sentinel, { bytes: 16, stream: foreignStream })).toThrow(/another runtime/);
    expect(() => sentinel.fill(7, { stream: foreignStream })).toThrow(pkv.InvalidArgumentError);
    expect(() => event.record(foreignStream)).toThrow(pkv.InvalidArgumentError);
    expectSentinelIntact();
  });

  test("use after dispose is BadStateError, for every kind of object", () => {
    const buf = rt.allocDevice(16);
    const pinned = rt.allocPinned(16);
    const stream = rt.createStream();
    const event = rt.createEvent();
    for (const o of [buf, pinned, stream, event]) o.dispose();
    const cases: [string, () => unknown][] = [
      ["write", () => buf.write(new Uint8Array(1))],
      ["read", () => buf.read(new Uint8Array(1))],
      ["fill", () => buf.fill(0)],
      ["copy into", () => buf.copyFrom(sentinel, { bytes: 1 })],
      ["copy from", () => sentinel.copyFrom(buf, { bytes: 1 })],
      ["view", () => pinned.view(Uint8Array)],
      ["stream synchronize", () => stream.synchronize()],
      ["fill on a disposed stream", () => sentinel.fill(0, { stream })],
      ["event record", () => event.record()],
      ["handle", () => buf.handle],
    ];
    for (const [what, call] of cases) {
      expect(call, what).toThrow(pkv.BadStateError);
      expect(call, what).toThrow(/was disposed/);
    }
    expectSentinelIntact();
  });

  test("use after the runtime was disposed is BadStateError, and disposing children later is harmless", () => {
    const other = pkv.openRuntime({ backend: "cpu" });
    const buf = other.allocDevice(16);
    const pinned = other.allocPinned(16);
    const view = pinned.view(Uint8Array);
    const stream = other.createStream();
    const event = other.createEvent();
    const handles = [buf.handle, pinned.handle, stream.handle, event.handle];
    other.dispose();
    expect(view.length).toBe(0);
    for (const o of [buf, pinned, stream, event]) expect(o.disposed).toBe(true);
    expect(() => buf.write(new Uint8Array(1))).toThrow(pkv.BadStateError);
    expect(() => pinned.view(Uint8Array)).toThrow(pkv.BadStateError);
    expect(() => stream.synchronize()).toThrow(pkv.BadStateError);
    expect(() => event.record()).toThrow(pkv.BadStateError);
    expect(() => other.allocDevice(16)).toThrow(pkv.BadStateError);
    expect(() => other.createStream()).toThrow(pkv.BadStateError);
    for (const o of [buf, pinned, stream, event]) o.dispose(); // no double free
    // natively the children were freed with their runtime
    expect(native().pkv_buffer_free(handles[0]!)).toBe(S.INVALID_HANDLE);
    expect(native().pkv_stream_destroy(handles[2]!)).toBe(S.INVALID_HANDLE);
    expect(native().pkv_event_destroy(handles[3]!)).toBe(S.INVALID_HANDLE);
    expectSentinelIntact();
  });
});

afterAll(() => {
  expectSentinelIntact();
  rt.dispose();
  expect(sentinelView.length).toBe(0);
});
