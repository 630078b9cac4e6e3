// Misuse gets a clear typed error and no crash, and leaves everything else as it was: a sentinel buffer
// (and its pinned view) made first must still hold its data after every case in this file.
import { type Pointer, toArrayBuffer } from "bun:ffi";
import { afterAll, describe, expect, test } from "bun:test";
import * as pkv from "../lib/index.ts";
import { DEVICE_INFO, PLAN_INFO } from "../lib/ffi/layouts.ts";
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
      [
        "pkv_buffer_fill(.., stream = buffer)",
        () => native().pkv_buffer_fill(sentinel.handle, 0, 0, 1, sentinel.handle),
      ],
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

describe("raw ABI: native hardening regressions", () => {
  const o = () => new BigUint64Array(1);
  const handle = (out: BigUint64Array) => Number(out[0]) as Pointer;
  // A small pool and engine: 2 layers, 8 pages of 16 slots, 2 KV heads of 64, group 2; 2 swap slots.
  const poolConfig = () => new Int32Array([2, 8, 16, 2, 64, 0, 4, 4, 2, 0]);
  function engineConfig(maxBatch = 2): Uint8Array {
    const bytes = new ArrayBuffer(32);
    new Int32Array(bytes, 0, 7).set([4, 2, 64, 16, 0, 0, maxBatch]);
    return new Uint8Array(bytes);
  }
  function createPool(config = poolConfig()): Pointer {
    const out = o();
    expect(native().pkv_kvpool_create(rt.handle, config, out)).toBe(S.OK);
    return handle(out);
  }
  function tables(pool: Pointer): { table: Int32Array; dirty: Int32Array } {
    const t = o(),
      d = o();
    expect(native().pkv_kvpool_table_addresses(pool, t, d)).toBe(S.OK);
    return {
      table: new Int32Array(toArrayBuffer(Number(t[0]) as Pointer, 0, 16 * 4)),
      dirty: new Int32Array(toArrayBuffer(Number(d[0]) as Pointer, 0, 4 * 4)),
    };
  }
  // Every slot of every layer holds a value of its page, so runs over different pages differ.
  function fillPool(pool: Pointer): void {
    const slots = Int32Array.from({ length: 128 }, (_, i) => i);
    for (let layer = 0; layer < 2; layer++) {
      const k = new Uint16Array(128 * 2 * 64).map((_, i) => 0x3000 + ((Math.floor(i / 128) * 13 + i + layer) & 0x3ff));
      expect(
        native().pkv_kvpool_write(
          pool,
          layer,
          128,
          slots,
          k,
          k.map((x) => x ^ 0x155),
        ),
      ).toBe(S.OK);
    }
  }
  function plan(engine: Pointer, pool: Pointer, rows: number[], lens: number[]): number {
    const info = new Int32Array(PLAN_INFO.size / 4);
    const status = native().pkv_decode_plan(
      engine,
      pool,
      rows.length,
      Int32Array.from(rows),
      Int32Array.from(lens),
      -1,
      info,
    );
    expect(status, String(native().pkv_last_error())).toBe(S.OK);
    return info[4]!;
  }
  const q = new Uint16Array(2 * 4 * 64).map((_, i) => 0x3400 + (i & 0xff));
  function run(engine: Pointer, planId: number, layer = 0): { status: number; out: Uint16Array; message: string } {
    const out = new Uint16Array(q.length);
    const status = native().pkv_decode_run(engine, planId, layer, q, out, null);
    return { status, out, message: String(native().pkv_last_error()) };
  }

  test("handles are tokens never reused: a freed handle stays invalid whatever is allocated after it", () => {
    const seen = new Set<number>();
    let first = 0;
    for (let i = 0; i < 500; i++) {
      const out = o();
      expect(native().pkv_buffer_alloc(rt.handle, 0, 64, out)).toBe(S.OK);
      const h = Number(out[0]);
      expect(seen.has(h)).toBe(false); // the allocator reuses the address, the handle is new
      seen.add(h);
      if (i === 0) first = h;
      else expect(native().pkv_buffer_free(h as Pointer)).toBe(S.OK);
    }
    expect(native().pkv_buffer_free(first as Pointer)).toBe(S.OK);
    for (const h of seen) {
      const r = raw(() => native().pkv_buffer_size(h as Pointer, o()));
      expect(r.status).toBe(S.INVALID_HANDLE);
      expect(r.message).toMatch(/^pkv_buffer_size: buf is not a live buffer: it was freed/);
    }
    expect(raw(() => native().pkv_kvpool_destroy(rt.handle)).message).toContain("it is a runtime handle");
    expect(raw(() => native().pkv_kvpool_destroy(0x1234 as Pointer)).message).toContain("never handed it out");
    expectSentinelIntact();
  });

  test("a plan of a destroyed pool is PKV_ERR_BAD_STATE, also after new pools took its place", () => {
    const out = o();
    expect(native().pkv_decode_engine_create(rt.handle, engineConfig(), out)).toBe(S.OK);
    const engine = handle(out);
    const pool = createPool();
    const { table, dirty } = tables(pool);
    table.set([0, 1, 2, 3], 0);
    dirty[0] = 0;
    const planId = plan(engine, pool, [0], [60]);
    expect(run(engine, planId).status).toBe(S.OK);
    expect(native().pkv_kvpool_destroy(pool)).toBe(S.OK);
    // New pools, smaller than the old one (1 layer, 1 page): an address match would read past them.
    const others = Array.from({ length: 20 }, () => createPool(new Int32Array([1, 1, 16, 2, 64, 0, 1, 1, 0, 0])));
    for (const layer of [0, 1]) {
      const r = run(engine, planId, layer);
      expect(r.status).toBe(S.BAD_STATE);
      expect(r.message).toMatch(/^pkv_decode_run: plan \d+'s KV pool was destroyed/);
    }
    expect(native().pkv_kvpool_write(pool, 0, 0, null, null, null)).toBe(S.INVALID_HANDLE);
    for (const p of others) expect(native().pkv_kvpool_destroy(p)).toBe(S.OK);
    expect(native().pkv_decode_engine_destroy(engine)).toBe(S.OK);
    expectSentinelIntact();
  });

  test("the CPU backend runs the table its plan validated: later writes to the pinned table change nothing", () => {
    const out = o();
    expect(native().pkv_decode_engine_create(rt.handle, engineConfig(), out)).toBe(S.OK);
    const engine = handle(out);
    const pool = createPool();
    fillPool(pool);
    const { table, dirty } = tables(pool);
    table.set([0, 1, 2, 3, 4, 5, 6, 7], 0);
    dirty.set([0, 0]);
    const planId = plan(engine, pool, [0, 1], [64, 50]);
    const before = run(engine, planId, 1);
    expect(before.status).toBe(S.OK);
    // Other valid pages (different K/V) and garbage, without a dirty mark: the run must not see them.
    table.set([7, 6, 5, 4, 3, 2, 1, 0], 0);
    expect(run(engine, planId, 1).out).toEqual(before.out);
    table.set([-1, 2 ** 31 - 1, 8, -(2 ** 31), 1000, -7, 9, 12], 0);
    expect(run(engine, planId, 1).out).toEqual(before.out);
    // Marked dirty, the garbage is refused by the next plan, and the current plan stays runnable.
    dirty[0] = 0;
    const info = new Int32Array(PLAN_INFO.size / 4);
    const refused = raw(() => native().pkv_decode_plan(engine, pool, 1, Int32Array.of(0), Int32Array.of(64), -1, info));
    expect(refused.status).toBe(S.OUT_OF_RANGE);
    expect(refused.message).toContain("holds page -1");
    expect(run(engine, planId, 1).out).toEqual(before.out);
    // A new plan of the same rows, pages swapped in the table: now the output changes.
    table.set([4, 5, 6, 7, 0, 1, 2, 3], 0);
    dirty.set([0, 0]);
    const next = plan(engine, pool, [0, 1], [64, 50]);
    expect(run(engine, next, 1).out).not.toEqual(before.out);
    table.set([0, 1, 2, 3, 4, 5, 6, 7], 0);
    dirty.set([0, 0]);
    expect(run(engine, plan(engine, pool, [0, 1], [64, 50]), 1).out).toEqual(before.out);
    expect(native().pkv_runtime_synchronize(rt.handle)).toBe(S.OK);
    expect(native().pkv_kvpool_destroy(pool)).toBe(S.OK);
    expect(native().pkv_decode_engine_destroy(engine)).toBe(S.OK);
  });

  test("sizes near 2^64 are errors, not wrapped allocations", () => {
    for (const bytes of [2n ** 64n - 1n, 2n ** 64n - 255n, 2n ** 63n, 2n ** 62n]) {
      const out = o();
      const r = raw(() => native().pkv_buffer_alloc(rt.handle, 0, bytes, out));
      expect(r.status, String(bytes)).toBe(S.OUT_OF_MEMORY);
      expect(r.message).toMatch(/^pkv_buffer_alloc: host allocation of \d+ bytes/);
      expect(out[0]).toBe(0n);
    }
    // Pool sizes: 2^31 - 1 swap slots of 4096 layers x 2 x 256 x 256 x 256 x 2 bytes overflow 63 bits.
    const huge = new Int32Array([4096, 8191, 256, 256, 256, 0, 1, 1, 2 ** 31 - 1, 0]);
    const r = raw(() => native().pkv_kvpool_create(rt.handle, huge, o()));
    expect(r.status).toBe(S.INVALID_ARGUMENT);
    expect(r.message).toMatch(/^pkv_kvpool_create: swap bytes .* overflows 63 bits/);
    // 2^52 bytes of K/V: a size that fits but no memory holds.
    const big = raw(() =>
      native().pkv_kvpool_create(rt.handle, new Int32Array([4096, 1 << 20, 256, 8, 128, 0, 1, 1, 0, 0]), o()),
    );
    expect(big.status).toBe(S.OUT_OF_MEMORY);
    expect(big.message).toMatch(/^pkv_kvpool_create: host allocation of \d+ bytes/);
    // An oversized probe used to escape as std::length_error ("unexpected exception").
    const probe = raw(() => native().pkv_probe_read_bandwidth(rt.handle, 2n ** 62n, 1, new Float64Array(1)));
    expect(probe.status).toBe(S.OUT_OF_MEMORY);
    expect(probe.message).toMatch(/^pkv_probe_read_bandwidth: /);
    expectSentinelIntact();
  });

  test("pkv_reference_decode checks page_indices (and page_indptr) before reading them", () => {
    const shape = new ArrayBuffer(24);
    new Int32Array(shape, 0, 5).set([4, 2, 64, 16, 0]);
    const k = new Uint16Array(2 * 2 * 16 * 64),
      qh = new Uint16Array(4 * 64),
      outh = new Uint16Array(4 * 64);
    const call = (indptr: number[], indices: Int32Array | null, lens: number[]) =>
      raw(() =>
        native().pkv_reference_decode(
          new Uint8Array(shape),
          lens.length,
          Int32Array.from(indptr),
          indices,
          Int32Array.from(lens),
          k,
          k,
          2,
          qh,
          outh,
          null,
        ),
      );
    const nullIndices = call([0, 2], null, [20]);
    expect(nullIndices.status).toBe(S.NULL_POINTER);
    expect(nullIndices.message).toBe("pkv_reference_decode: page_indices is NULL");
    const decreasing = call([0, -4], Int32Array.of(0), [0]);
    expect(decreasing.status).toBe(S.INVALID_ARGUMENT);
    expect(decreasing.message).toContain("page_indptr[1] = -4 is below page_indptr[0]");
    expect(call([0, 2], Int32Array.of(0, 1), [20]).status).toBe(S.OK);
  });

  test("swaps refuse two pages into one slot and one slot into two pages, before moving anything", () => {
    const pool = createPool();
    fillPool(pool);
    const slots = Int32Array.from({ length: 128 }, (_, i) => i);
    const read = () => {
      const k = new Uint16Array(128 * 128),
        v = new Uint16Array(128 * 128);
      expect(native().pkv_kvpool_read(pool, 1, 128, slots, k, v)).toBe(S.OK);
      return [k, v];
    };
    const before = read();
    expect(native().pkv_kvpool_swap_out(pool, 2, Int32Array.of(3, 5), Int32Array.of(0, 1))).toBe(S.OK);
    const cases: [string, () => number][] = [
      [
        "swap_out: two pages into one slot",
        () => native().pkv_kvpool_swap_out(pool, 2, Int32Array.of(1, 2), Int32Array.of(1, 1)),
      ],
      [
        "swap_out: one page twice",
        () => native().pkv_kvpool_swap_out(pool, 2, Int32Array.of(4, 4), Int32Array.of(0, 1)),
      ],
      [
        "swap_in: one slot into two pages",
        () => native().pkv_kvpool_swap_in(pool, 2, Int32Array.of(0, 0), Int32Array.of(6, 7)),
      ],
      [
        "swap_in: two slots into one page",
        () => native().pkv_kvpool_swap_in(pool, 2, Int32Array.of(0, 1), Int32Array.of(6, 6)),
      ],
    ];
    for (const [what, call] of cases) {
      const r = raw(call);
      expect(r.status, what).toBe(S.INVALID_ARGUMENT);
      expect(r.message, what).toMatch(/^pkv_kvpool_swap_(out|in): (pages|swap_slots)\[1\] = \d+ is repeated$/);
    }
    expect(read()).toEqual(before);
    // The slots still hold pages 3 and 5: a valid swap-in into pages 6 and 7 copies exactly those.
    expect(native().pkv_kvpool_swap_in(pool, 2, Int32Array.of(0, 1), Int32Array.of(6, 7))).toBe(S.OK);
    const [k] = read(),
      [k0] = before;
    expect(k!.subarray(6 * 16 * 128, 7 * 16 * 128)).toEqual(k0!.subarray(3 * 16 * 128, 4 * 16 * 128));
    expect(native().pkv_kvpool_destroy(pool)).toBe(S.OK);
  });

  test("overlapping ranges of one buffer are refused: a copy onto itself, a run's q, out and lse", () => {
    using buf = rt.allocDevice(4096);
    buf.write(new Uint8Array(4096).fill(5));
    for (const [dst, src, bytes] of [
      [16, 0, 32],
      [0, 16, 32],
      [100, 100, 1],
    ]) {
      const r = raw(() => native().pkv_buffer_copy(buf.handle, dst!, buf.handle, src!, bytes!, null));
      expect(r.status).toBe(S.INVALID_ARGUMENT);
      expect(r.message).toMatch(/^pkv_buffer_copy: .* of one buffer overlap$/);
    }
    expect(native().pkv_buffer_copy(buf.handle, 32, buf.handle, 0, 32, null)).toBe(S.OK); // adjacent is fine
    const out = o();
    expect(native().pkv_decode_engine_create(rt.handle, engineConfig(1), out)).toBe(S.OK);
    const engine = handle(out);
    const pool = createPool();
    fillPool(pool);
    const { table, dirty } = tables(pool);
    table.set([0, 1], 0);
    dirty[0] = 0;
    const planId = plan(engine, pool, [0], [20]);
    const io = 4 * 64 * 2; // one row: 4 query heads x 64 x 2 bytes
    const runDevice = (qAt: number, outAt: number, lseAt: number | null) =>
      raw(() =>
        native().pkv_decode_run_device(
          engine,
          planId,
          0,
          buf.handle,
          qAt,
          buf.handle,
          outAt,
          lseAt === null ? null : buf.handle,
          lseAt ?? 0,
          null,
        ),
      );
    for (const [qAt, outAt, lseAt] of [
      [0, 0, null],
      [0, io - 16, null],
      [0, io, io + 256],
      [0, io, 0],
    ]) {
      const r = runDevice(qAt!, outAt!, lseAt!);
      expect(r.status, `${qAt} ${outAt} ${lseAt}`).toBe(S.INVALID_ARGUMENT);
      expect(r.message).toBe("pkv_decode_run_device: the q, out and lse ranges overlap");
    }
    expect(runDevice(0, io, 2 * io).status).toBe(S.OK);
    expect(native().pkv_kvpool_destroy(pool)).toBe(S.OK);
    expect(native().pkv_decode_engine_destroy(engine)).toBe(S.OK);
  });

  test("every failure names its entry point first, also from helpers deep in the call", () => {
    const pool = createPool();
    const cases: [string, () => number][] = [
      ["pkv_kvpool_write", () => native().pkv_kvpool_write(pool, 5, 1, Int32Array.of(0), q, q)],
      ["pkv_kvpool_copy_pages", () => native().pkv_kvpool_copy_pages(pool, 1, Int32Array.of(0), Int32Array.of(99))],
      ["pkv_buffer_alloc", () => native().pkv_buffer_alloc(rt.handle, 0, 2 ** 52, o())],
      [
        "pkv_event_elapsed_ms",
        () => native().pkv_event_elapsed_ms(sentinel.handle, sentinel.handle, new Float32Array(1)),
      ],
    ];
    for (const [name, call] of cases) {
      const r = raw(call);
      expect(r.status, name).not.toBe(S.OK);
      expect(r.message.startsWith(`${name}: `), r.message).toBe(true);
    }
    expect(native().pkv_kvpool_destroy(pool)).toBe(S.OK);
  });
});

afterAll(() => {
  expectSentinelIntact();
  rt.dispose();
  expect(sentinelView.length).toBe(0);
});
