// Misuse of every public method of the TypeScript API, table-driven, on the CPU backend. Each case runs in
// a fresh world (a cache with live, forked, swapped-out and released sequences, a decode engine with a
// current plan, a device and a pinned buffer holding known bytes, a scheduler) and must:
// - throw the typed PkvError subclass named in the table, with a message naming the method;
// - leave the cache exactly as before: stats, bookkeeping, page lists and every sequence's K/V
//   (test/support/kvcache.ts fingerprint), both buffers' bytes, and the plan still runnable with the same
//   output.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  BadStateError,
  DecodeEngine,
  DeviceBuffer,
  DeviceStepRunner,
  InvalidArgumentError,
  KVCache,
  KVPool,
  NullPointerError,
  OutOfMemoryError,
  OutOfRangeError,
  PinnedBuffer,
  PkvError,
  type Plan,
  RequestTooLargeError,
  Scheduler,
  type Sequence,
  StalePlanError,
  Stream,
  SyntheticDeviceModel,
  SyntheticModel,
  UnsupportedError,
  openRuntime,
  pageBytes,
  pagesFor,
} from "../lib/index.ts";
import { loadPolicy, policyPath } from "../lib/policy/store";
import { BATCH_BUCKETS, TOKEN_BUCKETS, emptyChoices } from "../lib/policy/table";
import { fingerprint, tokenData } from "./support/kvcache.ts";

const rt = openRuntime({ backend: "cpu" });
afterAll(() => rt.dispose());

const H = 2,
  D = 64,
  E = H * D,
  Hq = 4,
  P = 4;
const SHAPE = { numLayers: 2, numKvHeads: H, headDim: D, pageSize: P, dtype: "f16" as const };
const BUFFER_BYTES = 4096;

async function world() {
  const cache = new KVCache(rt, { ...SHAPE, numPages: 16, swapPages: 8, maxSequences: 8, maxPagesPerSequence: 8 });
  let stamp = 1;
  const grow = (seq: Sequence, n: number) => {
    const slots = cache.append(seq, n);
    const stamps = Array.from(slots, () => stamp++);
    for (let layer = 0; layer < SHAPE.numLayers; layer++) {
      const { k, v } = tokenData(stamps, layer, E);
      cache.writeKV(layer, slots, k, v);
    }
    return slots;
  };
  const a = cache.createSequence();
  grow(a, 6);
  const b = cache.createSequence({ tokens: [1, 2, 3, 4, 5, 6, 7, 8, 9] });
  grow(b, 2);
  const c = cache.fork(a); // shares a's pages, the partial last one included
  const d = cache.createSequence();
  grow(d, 5);
  cache.swapOut(d);
  const released = cache.createSequence();
  grow(released, 3);
  cache.release(released);
  const nextSlot = cache.append(b, 1); // this step's slot: writable, K/V written below
  const { k: nextK, v: nextV } = tokenData([stamp++], 0, E);
  cache.writeKV(0, nextSlot, nextK, nextV);

  const engine = new DecodeEngine(rt, {
    numQoHeads: Hq,
    numKvHeads: H,
    headDim: D,
    pageSize: P,
    dtype: "f16",
    maxBatch: 4,
  });
  const plan = engine.plan(cache, [a, b]);
  const q = new Uint16Array(2 * Hq * D).map((_, i) => 0x3000 + (i % 700));
  const out = new Uint16Array(q.length);
  const device = rt.allocDevice(BUFFER_BYTES);
  const pinned = rt.allocPinned(BUFFER_BYTES);
  const pattern = new Uint8Array(BUFFER_BYTES).map((_, i) => (i * 31 + 7) & 0xff);
  device.write(pattern);
  pinned.write(pattern.map((x) => x ^ 0x5a));
  const qb = rt.allocDevice(q.byteLength);
  qb.write(q);
  const ob = rt.allocDevice(q.byteLength);
  const model = new SyntheticModel({ ...SHAPE, numQoHeads: Hq });
  const schedulerEngine = new DecodeEngine(rt, {
    numQoHeads: Hq,
    numKvHeads: H,
    headDim: D,
    pageSize: P,
    dtype: "f16",
    maxBatch: 4,
  });
  const scheduler = new Scheduler({ cache, engine: schedulerEngine, model });
  const running = scheduler.submit({ promptLength: 3, maxTokens: 4 });
  await scheduler.step(); // one request running, holding pages
  const sequences = [a, b, c, d];
  const dispose = () => {
    for (const o of [engine, schedulerEngine, device, pinned, qb, ob, cache]) o.dispose();
  };
  return {
    cache,
    a,
    b,
    c,
    d,
    released,
    nextSlot,
    nextK,
    nextV,
    engine,
    plan,
    q,
    out,
    device,
    pinned,
    qb,
    ob,
    model,
    scheduler,
    schedulerEngine,
    running,
    sequences,
    dispose,
  };
}
type World = Awaited<ReturnType<typeof world>>;

/** Everything a misuse must leave as it was. */
function observe(w: World) {
  const bytes = (buf: World["device"] | World["pinned"]) => {
    const back = new Uint8Array(BUFFER_BYTES);
    buf.read(back);
    return back;
  };
  return {
    cache: fingerprint(w.cache, w.sequences),
    device: bytes(w.device),
    pinned: bytes(w.pinned),
    scheduler: { waiting: w.scheduler.waiting, running: w.scheduler.running, swapped: w.scheduler.swapped },
  };
}

/** The current plan's output (the plan must still be runnable after a refused call). */
function planOutput(w: World): Uint16Array {
  const out = new Uint16Array(w.q.length);
  w.engine.run(w.plan, 0, w.q, out);
  return out;
}

type ErrorClass = new (...args: never[]) => PkvError;
type Case = [what: string, Class: ErrorClass, misuse: (w: World) => unknown, message?: string | RegExp];

const NOT_COUNTS = [
  1.5,
  -1,
  Number.NaN,
  Number.POSITIVE_INFINITY,
  Number.NEGATIVE_INFINITY,
  2 ** 53,
  "8",
  null,
] as unknown as number[];
/** For optional arguments, where null means the default as undefined does. */
const NOT_OPTIONAL_COUNTS = NOT_COUNTS.filter((v) => v !== null);
const PROTOTYPE_NAMES = ["toString", "constructor", "__proto__", "hasOwnProperty", "valueOf"];

/** One case per bad value: `call(w, value)` must throw Class naming `name`. */
function each(
  what: string,
  values: readonly unknown[],
  Class: ErrorClass,
  call: (w: World, value: never) => unknown,
  message?: string | RegExp,
): Case[] {
  return values.map((value) => [`${what} = ${String(value)}`, Class, (w: World) => call(w, value as never), message]);
}

const runtimeCases: Case[] = [
  ...each(
    "allocDevice bytes",
    [0, ...NOT_COUNTS],
    InvalidArgumentError,
    (_, v) => rt.allocDevice(v),
    "allocDevice: bytes",
  ),
  ...each(
    "allocPinned bytes",
    [0, ...NOT_COUNTS],
    InvalidArgumentError,
    (_, v) => rt.allocPinned(v),
    "allocPinned: bytes",
  ),
  ...each(
    "openRuntime backend",
    ["gpu", ...PROTOTYPE_NAMES],
    InvalidArgumentError,
    (_, v) => openRuntime({ backend: v }),
    "backend",
  ),
  ...each(
    "openRuntime device",
    [1.5, -1, Number.NaN, 2 ** 32],
    InvalidArgumentError,
    (_, v) => openRuntime({ backend: "cpu", device: v }),
    "openRuntime: device",
  ),
  ...each(
    "createKVCache numPages",
    NOT_COUNTS,
    InvalidArgumentError,
    (_, v) => rt.createKVCache({ ...SHAPE, numPages: v }),
    "numPages",
  ),
  ...each(
    "createKVCache dtype",
    ["f32", ...PROTOTYPE_NAMES],
    InvalidArgumentError,
    (_, v) => rt.createKVCache({ ...SHAPE, numPages: 4, dtype: v }),
    "dtype",
  ),
  ...each(
    "createDecodeEngine policy",
    ["fastest", ...PROTOTYPE_NAMES],
    InvalidArgumentError,
    (_, v) =>
      rt.createDecodeEngine({ numQoHeads: Hq, numKvHeads: H, headDim: D, pageSize: P, dtype: "f16", policy: v }),
    "createDecodeEngine: policy",
  ),
  ...each(
    "createDecodeEngine dtype",
    PROTOTYPE_NAMES,
    InvalidArgumentError,
    (_, v) => rt.createDecodeEngine({ numQoHeads: Hq, numKvHeads: H, headDim: D, pageSize: P, dtype: v }),
    "dtype",
  ),
  // 2^32 + 4 heads wrapped to 4 in the int32 config before.
  ...each(
    "createDecodeEngine numQoHeads",
    [2 ** 32 + 4, ...NOT_COUNTS],
    InvalidArgumentError,
    (_, v) => rt.createDecodeEngine({ numQoHeads: v, numKvHeads: H, headDim: D, pageSize: P, dtype: "f16" }),
    "createDecodeEngine: numQoHeads",
  ),
  ...each(
    "createDecodeEngine maxBatch",
    [0, ...NOT_OPTIONAL_COUNTS],
    InvalidArgumentError,
    (_, v) =>
      rt.createDecodeEngine({ numQoHeads: Hq, numKvHeads: H, headDim: D, pageSize: P, dtype: "f16", maxBatch: v }),
    "maxBatch",
  ),
  ...each(
    "createDecodeEngine smScale",
    [-1, Number.NaN, Number.POSITIVE_INFINITY, "1"],
    InvalidArgumentError,
    (_, v) =>
      rt.createDecodeEngine({ numQoHeads: Hq, numKvHeads: H, headDim: D, pageSize: P, dtype: "f16", smScale: v }),
    "smScale",
  ),
  ["createDecodeEngine without options", InvalidArgumentError, () => rt.createDecodeEngine(null as never), "options"],
  ...each(
    "calibrate rounds",
    [0, 1.5, Number.NaN],
    InvalidArgumentError,
    (_, v) => rt.calibrate({ numQoHeads: Hq, numKvHeads: H, headDim: D, pageSize: P, dtype: "f16" }, { rounds: v }),
    "calibrate: rounds",
  ),
  ...each(
    "calibrate agreement",
    [1.5, -0.1, Number.NaN],
    InvalidArgumentError,
    (_, v) => rt.calibrate({ numQoHeads: Hq, numKvHeads: H, headDim: D, pageSize: P, dtype: "f16" }, { agreement: v }),
    "agreement",
  ),
  ...each(
    "calibrate dtype",
    PROTOTYPE_NAMES,
    InvalidArgumentError,
    (_, v) => rt.calibrate({ numQoHeads: Hq, numKvHeads: H, headDim: D, pageSize: P, dtype: v }),
    "dtype",
  ),
  [
    "calibrate on the CPU backend",
    UnsupportedError,
    () => rt.calibrate({ numQoHeads: Hq, numKvHeads: H, headDim: D, pageSize: P, dtype: "f16" }),
    "CUDA",
  ],
  ["capture of a non-function", InvalidArgumentError, () => rt.capture(42 as never), "capture"],
  ["capture on a non-stream", InvalidArgumentError, () => rt.capture(() => {}, {} as Stream), "capture: stream"],
  [
    "flushL2 on a non-stream",
    InvalidArgumentError,
    () => rt.flushL2({ handle: 0 } as unknown as Stream),
    "flushL2: stream",
  ],
  ...each(
    "probeReadBandwidth bytes",
    NOT_OPTIONAL_COUNTS,
    InvalidArgumentError,
    (_, v) => rt.probeReadBandwidth({ bytes: v }),
    "probeReadBandwidth: bytes",
  ),
  ...each(
    "probeReadBandwidth iterations",
    [1.5, -1, Number.NaN, 2 ** 31],
    InvalidArgumentError,
    (_, v) => rt.probeReadBandwidth({ bytes: 1 << 20, iterations: v }),
    "iterations",
  ),
  ["probeReadBandwidth below 1 MiB", InvalidArgumentError, () => rt.probeReadBandwidth({ bytes: 1000 })],
  [
    "synchronize after dispose",
    BadStateError,
    () => {
      const other = openRuntime({ backend: "cpu" });
      other.dispose();
      other.synchronize();
    },
    "disposed",
  ],
  [
    "createStream after dispose",
    BadStateError,
    () => {
      const other = openRuntime({ backend: "cpu" });
      other.dispose();
      other.createStream();
    },
    "disposed",
  ],
  [
    "createEvent after dispose",
    BadStateError,
    () => {
      const other = openRuntime({ backend: "cpu" });
      other.dispose();
      other.createEvent();
    },
    "disposed",
  ],
  [
    "createKVCache after dispose",
    BadStateError,
    () => {
      const other = openRuntime({ backend: "cpu" });
      other.dispose();
      other.createKVCache({ ...SHAPE, numPages: 4 });
    },
    "disposed",
  ],
];

const bufferCases: Case[] = ["device", "pinned"].flatMap((kind) => {
  const buf = (w: World) => (kind === "device" ? w.device : w.pinned);
  return [
    ...each(
      `${kind}.write offset`,
      NOT_COUNTS,
      InvalidArgumentError,
      (w, v) => buf(w).write(new Uint8Array(4), v),
      "write: offset",
    ),
    [`${kind}.write past the end`, OutOfRangeError, (w) => buf(w).write(new Uint8Array(8), BUFFER_BYTES - 4)],
    [`${kind}.write of a non-array`, InvalidArgumentError, (w) => buf(w).write([1, 2] as never), "write"],
    ...each(
      `${kind}.read offset`,
      NOT_COUNTS,
      InvalidArgumentError,
      (w, v) => buf(w).read(new Uint8Array(4), v),
      "read: offset",
    ),
    [`${kind}.read past the end`, OutOfRangeError, (w) => buf(w).read(new Uint8Array(8), BUFFER_BYTES - 4)],
    ...each(
      `${kind}.copyFrom bytes`,
      NOT_OPTIONAL_COUNTS,
      InvalidArgumentError,
      (w, v) => buf(w).copyFrom(w.qb, { bytes: v }),
      "copyFrom: bytes",
    ),
    ...each(
      `${kind}.copyFrom srcOffset`,
      NOT_OPTIONAL_COUNTS,
      InvalidArgumentError,
      (w, v) => buf(w).copyFrom(w.qb, { srcOffset: v }),
      "copyFrom: srcOffset",
    ),
    ...each(
      `${kind}.copyFrom dstOffset`,
      NOT_OPTIONAL_COUNTS,
      InvalidArgumentError,
      (w, v) => buf(w).copyFrom(w.qb, { dstOffset: v }),
      "copyFrom: dstOffset",
    ),
    [
      `${kind}.copyFrom a non-buffer`,
      InvalidArgumentError,
      (w) => buf(w).copyFrom(new Uint8Array(4) as never),
      "copyFrom: source",
    ],
    [
      `${kind}.copyFrom on a non-stream`,
      InvalidArgumentError,
      (w) => buf(w).copyFrom(w.qb, { bytes: 4, stream: {} as Stream }),
      "copyFrom: stream",
    ],
    [
      `${kind}.copyFrom past the end`,
      OutOfRangeError,
      (w) => buf(w).copyFrom(w.qb, { dstOffset: BUFFER_BYTES - 4, bytes: 8 }),
    ],
    ...each(
      `${kind}.fill value`,
      [256, -1, 1.5, Number.NaN, "7"],
      InvalidArgumentError,
      (w, v) => buf(w).fill(v),
      "fill: byte value",
    ),
    ...each(
      `${kind}.fill offset`,
      NOT_OPTIONAL_COUNTS,
      InvalidArgumentError,
      (w, v) => buf(w).fill(1, { offset: v }),
      "fill: offset",
    ),
    ...each(
      `${kind}.fill bytes`,
      NOT_OPTIONAL_COUNTS,
      InvalidArgumentError,
      (w, v) => buf(w).fill(1, { bytes: v }),
      "fill: bytes",
    ),
    [
      `${kind}.fill on a non-stream`,
      InvalidArgumentError,
      (w) => buf(w).fill(1, { bytes: 4, stream: 3 as unknown as Stream }),
      "fill: stream",
    ],
    [`${kind}.fill past the end`, OutOfRangeError, (w) => buf(w).fill(1, { offset: 8, bytes: BUFFER_BYTES })],
  ] as Case[];
});

const viewCases: Case[] = [
  ...each(
    "view byteOffset",
    [1.5, -4, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, "4"],
    InvalidArgumentError,
    (w, v) => w.pinned.view(Uint8Array, v),
    "view: byteOffset",
  ),
  // A fractional length made a view of 2 elements from 2.5 before.
  ...each(
    "view length",
    [2.5, -1, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, "4"],
    InvalidArgumentError,
    (w, v) => w.pinned.view(Uint8Array, 0, v),
    "view: length",
  ),
  [
    "view offset not a multiple of the element size",
    InvalidArgumentError,
    (w) => w.pinned.view(Float32Array, 2),
    "multiple of 4",
  ],
  ["view of a non-typed-array class", InvalidArgumentError, (w) => w.pinned.view(Object as never), "view"],
  [
    "view longer than the buffer",
    OutOfRangeError,
    (w) => w.pinned.view(Uint32Array, 0, BUFFER_BYTES / 4 + 1),
    "exceeds",
  ],
  ["view from beyond the end", OutOfRangeError, (w) => w.pinned.view(Uint8Array, BUFFER_BYTES + 1), "exceeds"],
];

const cacheCases: Case[] = [
  [
    "createSequence with options not an object",
    InvalidArgumentError,
    (w) => w.cache.createSequence(5 as never),
    "createSequence: options",
  ],
  ...each(
    "createSequence tokens",
    ["abc", [1.5], [2 ** 31], [Number.NaN]],
    InvalidArgumentError,
    (w, v) => w.cache.createSequence({ tokens: v }),
    "createSequence",
  ),
  ...each(
    "append count",
    NOT_COUNTS.filter((v) => typeof v === "number"),
    InvalidArgumentError,
    (w, v) => w.cache.append(w.a, v),
    "append: token count",
  ),
  ...each(
    "append ids",
    ["12", [1, 2.5], [-(2 ** 31) - 1], {}],
    InvalidArgumentError,
    (w, v) => w.cache.append(w.a, v),
    "append",
  ),
  ["append too long for a row", OutOfRangeError, (w) => w.cache.append(w.a, 1e9), "maxPagesPerSequence"],
  ["append with a short out", InvalidArgumentError, (w) => w.cache.append(w.a, 2, new Int32Array(1)), "append: out"],
  ["append to a swapped-out sequence", BadStateError, (w) => w.cache.append(w.d, 1), "swapped out"],
  ["append to a released sequence", BadStateError, (w) => w.cache.append(w.released, 1), "released"],
  ["append to a non-sequence", InvalidArgumentError, (w) => w.cache.append({} as Sequence, 1), "not a Sequence"],
  ...each(
    "writeKV layer",
    [0.5, Number.NaN, "0", null],
    InvalidArgumentError,
    (w, v) => w.cache.writeKV(v, w.nextSlot, w.nextK, w.nextV),
    "writeKV: layer",
  ),
  ...each(
    "writeKV layer",
    [-1, 2, 2 ** 40],
    OutOfRangeError,
    (w, v) => w.cache.writeKV(v, w.nextSlot, w.nextK, w.nextV),
    "writeKV: layer",
  ),
  [
    "writeKV into a shared page",
    BadStateError,
    (w) => w.cache.writeKV(0, Int32Array.of(w.cache.pagesOf(w.a)[0]! * P), w.nextK, w.nextV),
    "writeKV",
  ],
  [
    "writeKV with slots not an Int32Array",
    InvalidArgumentError,
    (w) => w.cache.writeKV(0, [0] as never, w.nextK, w.nextV),
    "writeKV: slots",
  ],
  [
    "writeKV with a short k",
    InvalidArgumentError,
    (w) => w.cache.writeKV(0, w.nextSlot, w.nextK.subarray(1), w.nextV),
    "writeKV: k",
  ],
  [
    "writeKV slot outside the pool",
    OutOfRangeError,
    (w) => w.cache.writeKV(0, Int32Array.of(16 * P), w.nextK, w.nextV),
    "writeKV",
  ],
  ...each("readKV layer", [0.5, Number.NaN], InvalidArgumentError, (w, v) => w.cache.readKV(v, w.a), "readKV: layer"),
  ...each("readKV layer", [-1, 2], OutOfRangeError, (w, v) => w.cache.readKV(v, w.a), "readKV: layer"),
  ["readKV of a swapped-out sequence", BadStateError, (w) => w.cache.readKV(0, w.d), "readKV"],
  ["fork of a swapped-out sequence", BadStateError, (w) => w.cache.fork(w.d), "fork"],
  ["fork of a non-sequence", InvalidArgumentError, (w) => w.cache.fork("a" as never), "fork"],
  ["release twice", BadStateError, (w) => w.cache.release(w.released), "already released"],
  [
    "release of another cache's sequence",
    InvalidArgumentError,
    (w) => {
      using other = new KVCache(rt, { ...SHAPE, numPages: 4 });
      w.cache.release(other.createSequence());
    },
    "another cache",
  ],
  ["discard twice", BadStateError, (w) => w.cache.discard(w.released), "discard"],
  ["swapOut of a swapped-out sequence", BadStateError, (w) => w.cache.swapOut(w.d), "swapOut"],
  ["swapIn of a live sequence", BadStateError, (w) => w.cache.swapIn(w.a), "swapIn"],
  [
    "describeBatch of a non-array",
    InvalidArgumentError,
    (w) => w.cache.describeBatch("ab" as never, new Int32Array(2), new Int32Array(2)),
    "describeBatch",
  ],
  [
    "describeBatch with a swapped-out sequence",
    BadStateError,
    (w) => w.cache.describeBatch([w.a, w.d], new Int32Array(2), new Int32Array(2)),
    "describeBatch",
  ],
  [
    "describeBatch with short rows",
    InvalidArgumentError,
    (w) => w.cache.describeBatch([w.a, w.b], new Int32Array(1), new Int32Array(2)),
    "describeBatch",
  ],
  ["pagesOf a released sequence", BadStateError, (w) => w.cache.pagesOf(w.released), "pagesOf"],
  [
    "stats of a disposed cache",
    BadStateError,
    () => {
      const other = new KVCache(rt, { ...SHAPE, numPages: 4 });
      other.dispose();
      other.stats();
    },
    "disposed",
  ],
  [
    "snapshot of a disposed cache",
    BadStateError,
    () => {
      const other = new KVCache(rt, { ...SHAPE, numPages: 4 });
      other.dispose();
      other.snapshot();
    },
    "disposed",
  ],
];

const engineCases: Case[] = [
  ["plan of a non-array", InvalidArgumentError, (w) => w.engine.plan(w.cache, "ab" as never), "plan: sequences"],
  ["plan of an empty batch", InvalidArgumentError, (w) => w.engine.plan(w.cache, []), "plan: batch"],
  ["plan over maxBatch", InvalidArgumentError, (w) => w.engine.plan(w.cache, [w.a, w.b, w.c, w.a, w.b]), "plan: batch"],
  ...each(
    "plan policy",
    ["fastest", ...PROTOTYPE_NAMES],
    InvalidArgumentError,
    (w, v) => w.engine.plan(w.cache, [w.a], { policy: v }),
    "plan: policy",
  ),
  [
    "plan with options not an object",
    InvalidArgumentError,
    (w) => w.engine.plan(w.cache, [w.a], 3 as never),
    "plan: options",
  ],
  ["plan of a non-cache", InvalidArgumentError, (w) => w.engine.plan({} as never, [w.a]), "plan: cache"],
  ["plan with a swapped-out sequence", BadStateError, (w) => w.engine.plan(w.cache, [w.a, w.d]), "swapped out"],
  ["plan with a released sequence", BadStateError, (w) => w.engine.plan(w.cache, [w.released]), "released"],
  ...each(
    "run layer",
    [0.5, Number.NaN, Number.POSITIVE_INFINITY, "0", null],
    InvalidArgumentError,
    (w, v) => w.engine.run(w.plan, v, w.q, w.out),
    "run: layer",
  ),
  // 2^32 wrapped to layer 0 in the int32 argument before.
  ...each(
    "run layer",
    [-1, 2, 2 ** 32, 2 ** 40],
    OutOfRangeError,
    (w, v) => w.engine.run(w.plan, v, w.q, w.out),
    "layer",
  ),
  ["run with a short q", InvalidArgumentError, (w) => w.engine.run(w.plan, 0, w.q.subarray(1), w.out), "q holds"],
  [
    "run with a wrong lse",
    InvalidArgumentError,
    (w) => w.engine.run(w.plan, 0, w.q, w.out, new Float32Array(1)),
    "lse",
  ],
  [
    "run of host arrays on a stream",
    InvalidArgumentError,
    (w) => w.engine.run(w.plan, 0, w.q, w.out, undefined, { stream: rt.createStream() }),
    "run",
  ],
  [
    "run of host arrays with an offset",
    InvalidArgumentError,
    (w) => w.engine.run(w.plan, 0, w.q, w.out, undefined, { qOffset: 16 }),
    "run",
  ],
  ["run of mixed host and device", InvalidArgumentError, (w) => w.engine.run(w.plan, 0, w.qb, w.out), "run"],
  // Fractional, NaN and negative offsets were truncated or wrapped before.
  ...(["qOffset", "outOffset", "lseOffset"] as const).flatMap((name) =>
    each(
      `run ${name}`,
      [1.5, -16, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, "16"],
      InvalidArgumentError,
      (w, v) => w.engine.run(w.plan, 0, w.qb, w.ob, name === "lseOffset" ? w.device : undefined, { [name]: v }),
      `run: ${name}`,
    ),
  ),
  [
    "run with qOffset past the end",
    OutOfRangeError,
    (w) => w.engine.run(w.plan, 0, w.qb, w.ob, undefined, { qOffset: 2 ** 40 }),
  ],
  [
    "run with a misaligned outOffset",
    InvalidArgumentError,
    (w) => w.engine.run(w.plan, 0, w.qb, w.device, undefined, { outOffset: 8 }),
  ],
  [
    "run on a non-stream",
    InvalidArgumentError,
    (w) => w.engine.run(w.plan, 0, w.qb, w.ob, undefined, { stream: {} as Stream }),
    "run: stream",
  ],
  ["run of a non-plan", InvalidArgumentError, (w) => w.engine.run({} as Plan, 0, w.q, w.out), "run"],
  ["run of null", InvalidArgumentError, (w) => w.engine.run(null as never, 0, w.q, w.out), "run"],
  [
    "run of another engine's plan",
    InvalidArgumentError,
    (w) => w.schedulerEngine.run(w.plan, 0, w.q, w.out),
    "another engine",
  ],
  [
    "run of a forged copy of the plan",
    InvalidArgumentError,
    (w) => w.engine.run({ ...w.plan } as Plan, 0, w.q, w.out),
    "not a Plan",
  ],
  [
    "run of a replaced plan",
    StalePlanError,
    (w) => {
      const old = w.plan;
      w.plan = w.engine.plan(w.cache, [w.a, w.b]);
      w.engine.run(old, 0, w.q, w.out);
    },
    "replaced",
  ],
  [
    "setPolicyTable of a short table",
    InvalidArgumentError,
    (w) => w.engine.setPolicyTable({ choices: new Int8Array(3), measurements: [] }),
    "setPolicyTable",
  ],
  [
    "setPolicyTable with a cell of 5",
    InvalidArgumentError,
    (w) => {
      const choices = emptyChoices();
      choices[7] = 5;
      w.engine.setPolicyTable({ choices, measurements: [] });
    },
    "cell 7",
  ],
  [
    "setPolicyTable of a plain array",
    InvalidArgumentError,
    (w) =>
      w.engine.setPolicyTable({ choices: Array(BATCH_BUCKETS * TOKEN_BUCKETS).fill(0) as never, measurements: [] }),
    "Int8Array",
  ],
  ["setPolicyTable of null", InvalidArgumentError, (w) => w.engine.setPolicyTable(null as never), "setPolicyTable"],
  [
    "run after the engine's dispose",
    BadStateError,
    (w) => {
      const engine = new DecodeEngine(rt, { numQoHeads: Hq, numKvHeads: H, headDim: D, pageSize: P, dtype: "f16" });
      const plan = engine.plan(w.cache, [w.a]);
      engine.dispose();
      engine.run(plan, 0, new Uint16Array(Hq * D), new Uint16Array(Hq * D));
    },
    "disposed",
  ],
];

const schedulerOptions = (w: World) => ({ cache: w.cache, engine: w.schedulerEngine, model: w.model });
const schedulerCases: Case[] = [
  ...each(
    "Scheduler maxBatch",
    [0, 5, ...NOT_OPTIONAL_COUNTS],
    InvalidArgumentError,
    (w, v) => new Scheduler({ ...schedulerOptions(w), maxBatch: v }),
    "maxBatch",
  ),
  ...each(
    "Scheduler watermarkPages",
    [-1, 1.5, Number.NaN, 17],
    InvalidArgumentError,
    (w, v) => new Scheduler({ ...schedulerOptions(w), watermarkPages: v }),
    "watermarkPages",
  ),
  [
    "Scheduler swap not a boolean",
    InvalidArgumentError,
    (w) => new Scheduler({ ...schedulerOptions(w), swap: "yes" as never }),
    "swap",
  ],
  [
    "Scheduler model without sample",
    InvalidArgumentError,
    (w) => new Scheduler({ ...schedulerOptions(w), model: { prefill() {}, forward() {} } as never }),
    "sample",
  ],
  [
    "Scheduler shape with a fractional page size",
    InvalidArgumentError,
    (w) =>
      new Scheduler({
        ...schedulerOptions(w),
        shape: { numLayers: 2, numQoHeads: Hq, numKvHeads: H, headDim: D, pageSize: 4.5, numPages: 16 },
      }),
    "shape.pageSize",
  ],
  ...each(
    "submit promptLength",
    [0, 1.5, -3, Number.NaN, Number.POSITIVE_INFINITY, 1e308, "4"],
    InvalidArgumentError,
    (w, v) => w.scheduler.submit({ promptLength: v, maxTokens: 2 }),
    "submit: promptLength",
  ),
  ...each(
    "submit maxTokens",
    [0, 1.5, -1, Number.NaN, 1e308, "2"],
    InvalidArgumentError,
    (w, v) => w.scheduler.submit({ promptLength: 4, maxTokens: v }),
    "submit: maxTokens",
  ),
  ...each(
    "submit prompt",
    ["abc", [1, 2.5], [-1], [2 ** 31], [], null],
    InvalidArgumentError,
    (w, v) => w.scheduler.submit({ prompt: v, maxTokens: 2 }),
    "submit",
  ),
  ...each(
    "submit id",
    [-1, 1.5, Number.NaN, "3"],
    InvalidArgumentError,
    (w, v) => w.scheduler.submit({ promptLength: 4, maxTokens: 2, id: v }),
    "submit: id",
  ),
  [
    "submit of a live id",
    InvalidArgumentError,
    (w) => w.scheduler.submit({ promptLength: 4, maxTokens: 2, id: w.running.id }),
    "already live",
  ],
  [
    "submit of both prompt and promptLength",
    InvalidArgumentError,
    (w) => w.scheduler.submit({ prompt: [1], promptLength: 1, maxTokens: 2 }),
    "exactly one",
  ],
  [
    "submit of a request too long for the pool",
    RequestTooLargeError,
    (w) => {
      const handle = w.scheduler.submit({ promptLength: 3e7, maxTokens: 2 });
      throw handle.error;
    },
    "too long for the pool",
  ],
  ...each("cancel id", [1.5, Number.NaN, -1, "0"], InvalidArgumentError, (w, v) => w.scheduler.cancel(v), "cancel: id"),
  ["onStep of a non-function", InvalidArgumentError, (w) => w.scheduler.onStep(5 as never), "onStep"],
  ["onRetire of a non-function", InvalidArgumentError, (w) => w.scheduler.onRetire(null as never), "onRetire"],
];

// A pool over memory "the caller" owns (our own allocations, by address), with the engine's shape.
function callerPool(layers = 1): KVPool {
  const bytes = 8 * H * P * D * 2;
  const memory = () => Array.from({ length: layers }, () => rt.allocDevice(bytes).address);
  return KVPool.wrap(
    rt,
    { numLayers: layers, numPages: 8, pageSize: P, numKvHeads: H, headDim: D, dtype: "f16" },
    { k: memory(), v: memory() },
  );
}
const PAGED = { indptr: Int32Array.of(0, 1, 3), indices: Int32Array.of(0, 1, 2), lastPageLen: Int32Array.of(2, 4) };

const interopCases: Case[] = [
  ...each(
    "DeviceBuffer.wrap address",
    [-16, 16.5, Number.NaN, "16", null, 2n ** 64n],
    InvalidArgumentError,
    (_, v) => DeviceBuffer.wrap(rt, v, 16),
    "DeviceBuffer.wrap: address",
  ),
  ...each(
    "DeviceBuffer.wrap bytes",
    [0, ...NOT_COUNTS],
    InvalidArgumentError,
    (w, v) => DeviceBuffer.wrap(rt, w.device.address, v),
    "DeviceBuffer.wrap: bytes",
  ),
  [
    "DeviceBuffer.wrap of address 0",
    NullPointerError,
    () => DeviceBuffer.wrap(rt, 0, 16),
    "pkv_buffer_wrap: the wrapped range: address is 0",
  ],
  [
    "DeviceBuffer.wrap unaligned",
    InvalidArgumentError,
    (w) => DeviceBuffer.wrap(rt, w.device.address + 4, 16),
    "16-byte aligned",
  ],
  [
    "PinnedBuffer.wrap past the address space",
    InvalidArgumentError,
    () => PinnedBuffer.wrap(rt, 2n ** 63n - 16n, 32),
    "past the end",
  ],
  ...each(
    "Stream.wrap cudaStream",
    [-1, 0.5, "0", null, 2n ** 64n],
    InvalidArgumentError,
    (_, v) => Stream.wrap(rt, v),
    "Stream.wrap: cudaStream",
  ),
  [
    "createKVCache with numPages and memoryFraction",
    InvalidArgumentError,
    () => rt.createKVCache({ ...SHAPE, numPages: 4, memoryFraction: 0.5 }),
    "not both",
  ],
  [
    "createKVCache with swapPages and swapBytes",
    InvalidArgumentError,
    () => rt.createKVCache({ ...SHAPE, numPages: 4, swapPages: 1, swapBytes: 1 }),
    "not both",
  ],
  [
    "createKVCache without a size",
    InvalidArgumentError,
    () => rt.createKVCache({ ...SHAPE }),
    "numPages or memoryFraction",
  ],
  ...each(
    "createKVCache memoryFraction",
    [0, -0.5, 1.01, Number.NaN, "0.5"],
    InvalidArgumentError,
    (_, v) => rt.createKVCache({ ...SHAPE, memoryFraction: v }),
    "memoryFraction",
  ),
  ...each(
    "createKVCache swapBytes",
    NOT_COUNTS.filter((v) => v !== null),
    InvalidArgumentError,
    (_, v) => rt.createKVCache({ ...SHAPE, numPages: 4, swapBytes: v }),
    "swapBytes",
  ),
  [
    "pagesFor with too little memory",
    OutOfMemoryError,
    () => pagesFor(rt, SHAPE, { memoryFraction: 1, freeBytes: 1024 }),
    "holds no page",
  ],
  ["pageBytes of a bad head dim", UnsupportedError, () => pageBytes({ ...SHAPE, headDim: 96 }), "head_dim 96"],
  ...each("layout layer", [2, -1], OutOfRangeError, (w, v) => w.cache.layout(v), "layout: layer"),
  ...each("layout layer", [1.5, Number.NaN, "0"], InvalidArgumentError, (w, v) => w.cache.layout(v), "layout: layer"),
  ["positions of a released sequence", BadStateError, (w) => w.cache.positions(w.released), "positions"],
  ["positions of a swapped sequence", BadStateError, (w) => w.cache.positions(w.d), "positions"],
  ...each(
    "positions from",
    [-1, 100, 1.5],
    InvalidArgumentError,
    (w, v) => w.cache.positions(w.a, v),
    "positions: from",
  ),
  ...each(
    "positions count",
    [-1, 100, 1.5],
    InvalidArgumentError,
    (w, v) => w.cache.positions(w.a, 0, v),
    "positions: count",
  ),
  [
    "KVPool.wrap with a missing layer",
    InvalidArgumentError,
    (w) => KVPool.wrap(rt, { ...SHAPE, numPages: 2 }, { k: [w.device], v: [w.pinned] }),
    "one per layer",
  ],
  [
    "KVPool.wrap with swap space",
    InvalidArgumentError,
    (w) =>
      KVPool.wrap(rt, { ...SHAPE, numPages: 1, swapPages: 1 } as never, { k: [w.device, w.qb], v: [w.pinned, w.ob] }),
    "no swap space",
  ],
  [
    "KVPool.wrap over a buffer too small",
    OutOfRangeError,
    (w) => KVPool.wrap(rt, { ...SHAPE, numPages: 16 }, { k: [w.qb, w.ob], v: [w.device, w.pinned] }),
    "need",
  ],
  [
    "KVPool.wrap with K and V at one address",
    InvalidArgumentError,
    (w) => KVPool.wrap(rt, { ...SHAPE, numLayers: 1, numPages: 1 }, { k: [w.device], v: [w.device] }),
    "overlap",
  ],
  ...each(
    "KVPool.wrap address",
    [-16, 1.5, "0x10"],
    InvalidArgumentError,
    (_, v) => KVPool.wrap(rt, { ...SHAPE, numLayers: 1, numPages: 1 }, { k: [v], v: [v] }),
    "KVPool.wrap",
  ),
  ["planPaged over a cache", InvalidArgumentError, (w) => w.engine.planPaged(w.cache as never, PAGED), "not a KVPool"],
  [
    "planPaged with a page outside the pool",
    OutOfRangeError,
    (w) => w.engine.planPaged(callerPool(), { ...PAGED, indices: Int32Array.of(0, 1, 8) }),
    "pkv_decode_plan_paged: request 1: indices holds page 8",
  ],
  [
    "planPaged with a last page too long",
    InvalidArgumentError,
    (w) => w.engine.planPaged(callerPool(), { ...PAGED, lastPageLen: Int32Array.of(2, 5) }),
    "last_page_len[1] = 5",
  ],
  [
    "planPaged with indices too short",
    InvalidArgumentError,
    (w) => w.engine.planPaged(callerPool(), { ...PAGED, indices: Int32Array.of(0, 1) }),
    "planPaged: indices",
  ],
  [
    "planPaged with more requests than maxBatch",
    InvalidArgumentError,
    (w) =>
      w.engine.planPaged(callerPool(), {
        indptr: new Int32Array(6),
        indices: PAGED.indices,
        lastPageLen: new Int32Array(5).fill(1),
      }),
    "1..4",
  ],
  [
    "planPaged with an empty request",
    InvalidArgumentError,
    (w) => w.engine.planPaged(callerPool(), { ...PAGED, indptr: Int32Array.of(0, 0, 3) }),
    "at least one",
  ],
  [
    "planPaged of a block table with a bad stride",
    InvalidArgumentError,
    (w) => w.engine.planPaged(callerPool(), { blockTable: new Int32Array(4), stride: 0, seqLens: Int32Array.of(1) }),
    "stride",
  ],
  [
    "planPaged of a block table with a length past its row",
    InvalidArgumentError,
    (w) => w.engine.planPaged(callerPool(), { blockTable: new Int32Array(4), stride: 2, seqLens: Int32Array.of(9, 1) }),
    "seq_lens[0] = 9",
  ],
  [
    "planPaged of neither table",
    InvalidArgumentError,
    (w) => w.engine.planPaged(callerPool(), { pages: [] } as never),
    "must be",
  ],
  [
    "planPaged with a bad policy",
    InvalidArgumentError,
    (w) => w.engine.planPaged(callerPool(), PAGED, { policy: "toString" as never }),
    "policy",
  ],
  [
    "planPaged over a disposed pool",
    BadStateError,
    (w) => {
      const pool = callerPool();
      pool.dispose();
      return w.engine.planPaged(pool, PAGED);
    },
    "disposed",
  ],
];

// The device path: its model and runner are made inside each case (and freed there) from the world's parts.
const deviceModel = <T>(w: World, use: (m: SyntheticDeviceModel) => T): T => {
  using m = new SyntheticDeviceModel(rt, w.model);
  return use(m);
};
const deviceCases: Case[] = [
  [
    "device model forward of a layer past the pool's",
    OutOfRangeError,
    (w) => deviceModel(w, (m) => m.forward({ batch: 1, rows: w.device, cache: w.cache }, 2, null, w.qb)),
    "pkv_synthetic_forward",
  ],
  [
    "device model forward into a non-buffer q",
    InvalidArgumentError,
    (w) => deviceModel(w, (m) => m.forward({ batch: 1, rows: w.device, cache: w.cache }, 0, null, w.q as never)),
    "forward: q",
  ],
  [
    "device model forward of more rows than the buffer holds",
    OutOfRangeError,
    (w) => deviceModel(w, (m) => m.forward({ batch: 1000, rows: w.device, cache: w.cache }, 0, null, w.qb)),
    "rows",
  ],
  [
    "device model step without a KVCache",
    InvalidArgumentError,
    (w) => deviceModel(w, (m) => m.prefill({ batch: 1, rows: w.device, cache: {} as never })),
    "prefill: step.cache",
  ],
  [
    "device model prefill of -1 rows",
    InvalidArgumentError,
    (w) => deviceModel(w, (m) => m.prefill({ batch: -1, rows: w.device, cache: w.cache })),
    "prefill: step.batch",
  ],
  [
    "device model sample over its own rows",
    InvalidArgumentError,
    (w) => deviceModel(w, (m) => m.sample({ batch: 2, rows: w.device, cache: w.cache }, w.ob, w.device)),
    "overlap",
  ],
  [
    "device runner of maxBatch 0",
    InvalidArgumentError,
    (w) =>
      deviceModel(
        w,
        (model) => new DeviceStepRunner({ runtime: rt, cache: w.cache, engine: w.engine, model, maxBatch: 0 }),
      ),
    "maxBatch",
  ],
  [
    "device runner over an engine of other heads",
    InvalidArgumentError,
    (w) =>
      deviceModel(
        w,
        (model) =>
          new DeviceStepRunner({
            runtime: rt,
            cache: w.cache,
            engine: { ...w.engine, numQoHeads: 2 * Hq } as never,
            model,
          }),
      ),
    "heads",
  ],
  [
    "device runner prefill with too few slots",
    InvalidArgumentError,
    (w) =>
      deviceModel(w, (model) => {
        using runner = new DeviceStepRunner({ runtime: rt, cache: w.cache, engine: w.engine, model });
        const request = { id: 1, tokens: [1, 2, 3], promptLength: 3, generated: 0, contextLength: 0 };
        runner.prefill(request, w.b, w.nextSlot, 0, 3);
      }),
    "prefill: 1 slots for 3 positions",
  ],
  [
    "query of a disposed event",
    BadStateError,
    () => {
      const e = rt.createEvent();
      e.dispose();
      e.query();
    },
    "event was disposed",
  ],
];

const tables: [string, Case[]][] = [
  ["Runtime", runtimeCases],
  ["DeviceBuffer and PinnedBuffer", bufferCases],
  ["PinnedBuffer.view", viewCases],
  ["KVCache", cacheCases],
  ["DecodeEngine and the policy table", engineCases],
  ["Scheduler", schedulerCases],
  ["interop and memory sizing", interopCases],
  ["the device path", deviceCases],
];

for (const [name, cases] of tables)
  describe(`misuse of ${name}: a typed error, and nothing changed`, () => {
    for (const [what, Class, misuse, message] of cases)
      test(what, async () => {
        const w = await world();
        try {
          const before = observe(w);
          const output = planOutput(w);
          let thrown: unknown;
          try {
            misuse(w);
          } catch (error) {
            thrown = error;
          }
          expect(thrown).toBeInstanceOf(Class);
          expect(thrown).toBeInstanceOf(PkvError);
          const text = (thrown as Error).message;
          expect(text.length).toBeGreaterThan(0);
          if (message !== undefined) expect(text).toMatch(message);
          expect(observe(w)).toEqual(before);
          expect(planOutput(w)).toEqual(output);
        } finally {
          w.dispose();
        }
      });
  });

describe("stored policy tables", () => {
  const dir = mkdtempSync(join(tmpdir(), "pkv-misuse-policy-"));
  const saved = process.env.PKV_CACHE_DIR;
  process.env.PKV_CACHE_DIR = dir;
  afterAll(() => {
    if (saved === undefined) delete process.env.PKV_CACHE_DIR;
    else process.env.PKV_CACHE_DIR = saved;
    rmSync(dir, { recursive: true, force: true });
  });

  test("a file whose cells are not choices is ignored (Int8Array.from would wrap 300 to 44)", () => {
    const cells = BATCH_BUCKETS * TOKEN_BUCKETS;
    for (const [i, bad] of [300, "x", 0.5, null, 2].entries()) {
      const key = `misuse key ${i}`;
      const choices: unknown[] = Array(cells).fill(-1);
      choices[3] = bad;
      writeFileSync(policyPath(key), JSON.stringify({ key, date: "", choices, measurements: [] }));
      expect(loadPolicy(key)).toBeUndefined();
    }
    const key = "misuse key good";
    writeFileSync(policyPath(key), JSON.stringify({ key, date: "", choices: Array(cells).fill(1), measurements: [] }));
    expect(loadPolicy(key)?.choices.every((c) => c === 1)).toBe(true);
  });
});
