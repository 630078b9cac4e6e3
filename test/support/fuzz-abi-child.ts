// Fuzz driver of the C ABI through bun:ffi, run as a child process so that a crash kills only it:
//   bun test/support/fuzz-abi-child.ts --backend cpu|cuda --calls 20000 --seed 1 [--last-call FILE]
//   (--crash-at N makes call N a deliberate SIGSEGV, so the parent's crash report can be tested)
// Calls every entry point of cuda/include/persistentkv.h with random arguments of three classes:
//   bad   one argument made certainly invalid (NULL, freed, foreign or wrong-kind handle; a negative,
//         huge or unaligned size or offset; an out-of-range layer, page, slot or row; a repeated target):
//         must not return PKV_OK and must leave a last error that names the entry point;
//   valid must return PKV_OK (these build state: pools with pages written, plans, runs, swaps);
//   wild  NaN, fractional or infinite numbers, whose conversion decides validity: must not crash, and a
//         failure must name the entry point.
// Every round has its own runtime. A sentinel pool (a known pattern in every slot of every layer) and a
// sentinel buffer take part only in bad and read-only calls; at the end of the round both must read back
// unchanged, and every run of a plan must give the output of its first run, also after the pinned block
// table was scribbled on. Before each call its description is written to the last-call file, so the
// parent can name the call that crashed. Exit 0: all invariants held; the summary JSON is the last
// stdout line. Exit 1: a violation, described on stderr.
import { type Pointer, read, toArrayBuffer } from "bun:ffi";
import { closeSync, openSync, writeSync } from "node:fs";
import { PLAN_INFO } from "../../lib/ffi/layouts.ts";
import { native } from "../../lib/ffi/loader.ts";
import { seeded } from "../../lib/random.ts";

type Outcome = "bad" | "valid" | "wild";
type Kind = "runtime" | "buffer" | "stream" | "event" | "pool" | "engine" | "graph";
const KIND_CODE: Record<Kind, number> = { runtime: 1, buffer: 2, stream: 3, event: 4, pool: 5, engine: 6, graph: 7 };
const KINDS = Object.keys(KIND_CODE) as Kind[];

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2)
  args.set(process.argv[i]!.replace(/^--/, ""), process.argv[i + 1] ?? "");
const backendName = args.get("backend") ?? "cpu";
const BACKEND = backendName === "cuda" ? 1 : 0;
const CALLS = Number(args.get("calls") ?? 20000);
const SEED = Number(args.get("seed") ?? 1);
const ROUND_CALLS = Number(args.get("round") ?? 2500);
const lastCallPath = args.get("last-call");
const CRASH_AT = Number(args.get("crash-at") ?? -1);

const lib = native() as unknown as Record<string, (...a: unknown[]) => unknown>;
if (BACKEND === 1 && (lib.pkv_cuda_device_count!() as number) === 0) {
  process.stderr.write("fuzz-abi: --backend cuda needs a visible CUDA device\n");
  process.exit(2);
}
const random = seeded(SEED);
const int = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1)); // inclusive
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
const chance = (p: number) => random() < p;

// ---- the last-call record and invariant checks ----------------------------------------------------

const lastFd = lastCallPath ? openSync(lastCallPath, "w") : -1;
const record = new Uint8Array(512);
const encoder = new TextEncoder();
let callIndex = 0;
const counts = { bad: 0, valid: 0, wild: 0 };
const byEntry = new Map<string, number>();

function describe(a: unknown): string {
  if (a === null) return "NULL";
  if (ArrayBuffer.isView(a)) {
    const items = Array.from(a as unknown as ArrayLike<number | bigint> as ArrayLike<number>).slice(0, 6);
    return `${a.constructor.name}[${(a as unknown as { length: number }).length}](${items.join(",")})`;
  }
  if (typeof a === "number" && Number.isInteger(a) && Math.abs(a) > 0xffff) return `0x${a.toString(16)}`;
  return String(a);
}

function violation(message: string): never {
  process.stderr.write(`fuzz-abi violation (seed ${SEED}, backend ${backendName}, call #${callIndex}): ${message}\n`);
  process.exit(1);
}

function noteCall(text: string): void {
  if (lastFd < 0) return;
  record.fill(32);
  const bytes = encoder.encode(text.slice(0, 500));
  record.set(bytes);
  writeSync(lastFd, record, 0, record.length, 0);
}

function lastError(): string {
  return String(lib.pkv_last_error!());
}

/** Calls entry point `fn` and checks the invariants of its outcome class; returns the status. */
function call(expect: Outcome, fn: string, ...a: unknown[]): number {
  callIndex++;
  counts[expect]++;
  byEntry.set(fn, (byEntry.get(fn) ?? 0) + 1);
  const text = `#${callIndex} [${expect}] ${fn}(${a.map(describe).join(", ")})`;
  noteCall(text);
  if (callIndex === CRASH_AT) read.u8(8 as Pointer); // the harness test's crash
  const status = lib[fn]!(...a) as number;
  const message = lastError();
  if (expect === "valid" && status !== 0) violation(`${text}: a valid call returned ${status}: ${message}`);
  if (expect === "bad" && status === 0) violation(`${text}: a bad call returned PKV_OK`);
  if (status !== 0 && !message.includes(fn)) violation(`${text}: status ${status} left "${message}", not naming ${fn}`);
  if (status === 0 && message !== "") violation(`${text}: PKV_OK left the last error "${message}"`);
  if (status === 0 && CHANGES_PAGES.has(fn) && pools.has(a[0] as number)) pools.get(a[0] as number)!.version++;
  return status;
}

const CHANGES_PAGES = new Set([
  "pkv_synthetic_forward",
  "pkv_synthetic_prefill",
  "pkv_kvpool_write",
  "pkv_kvpool_write_device",
  "pkv_kvpool_copy_pages",
  "pkv_kvpool_swap_in",
]);

// ---- handles -----------------------------------------------------------------------------------------

interface BufferState {
  bytes: number;
  sentinel: boolean;
}
interface PoolState {
  cfg: Int32Array; // pkv_kv_config
  layers: number;
  pages: number;
  pageSize: number;
  heads: number;
  dim: number;
  rows: number;
  width: number;
  swap: number;
  table: Int32Array;
  dirty: Int32Array;
  sentinel: boolean;
  runtime: number;
  version: number; // bumped by every successful call that changes the pages' contents
}
interface PlanState {
  id: number;
  pool: number;
  batch: number;
  q: Uint16Array;
  expected: Map<number, Uint16Array>; // each layer's first output since the pool's contents last changed
  version: number; // the pool's version that `expected` holds outputs of
  multiquery?: boolean; // a row has several query tokens: such plans are not copied to other engines
}
interface EngineState {
  hq: number;
  heads: number;
  dim: number;
  pageSize: number;
  maxBatch: number;
  plan?: PlanState;
}

const live: Record<Kind, number[]> = {
  runtime: [],
  buffer: [],
  stream: [],
  event: [],
  pool: [],
  engine: [],
  graph: [],
};
const freed: Record<Kind, number[]> = {
  runtime: [],
  buffer: [],
  stream: [],
  event: [],
  pool: [],
  engine: [],
  graph: [],
};
const buffers = new Map<number, BufferState>();
const pools = new Map<number, PoolState>();
const engines = new Map<number, EngineState>();
const recorded = new Set<number>();
let rt = 0; // this round's runtime
let foreign = 0; // another runtime: the source of foreign handles
let foreignBuffer = 0,
  foreignStream = 0,
  foreignPool = 0,
  foreignEvent = 0;

const out64 = () => new BigUint64Array(1);
const handleOut = (o: BigUint64Array) => Number(o[0]);
const asPtr = (h: number) => (h === 0 ? null : (h as unknown as Pointer));

function forget(kind: Kind, h: number): void {
  const list = live[kind],
    i = list.indexOf(h);
  if (i >= 0) list.splice(i, 1);
  freed[kind].push(h);
  if (freed[kind].length > 64) freed[kind].shift();
}

/** A handle that is certainly not a live `kind`: NULL, freed, of another kind, forged or garbage. */
function badHandle(kind: Kind, allowNull = true): Pointer | null {
  for (;;) {
    const r = int(0, 5);
    if (r === 0 && allowNull) return null;
    if (r === 1 && freed[kind].length) return asPtr(pick(freed[kind]));
    if (r === 2) {
      const other = pick(KINDS.filter((k) => k !== kind && live[k].length));
      if (other) return asPtr(pick(live[other]));
    }
    if (r === 3) return asPtr(2 ** 52 + KIND_CODE[kind] * 2 ** 44 + 2 ** 40 + int(0, 1 << 20)); // never issued
    if (r === 4) return asPtr(pick([1, 8, 0x1234, 0xdeadbeef, 2 ** 47 - 16, int(1, 2 ** 40)]));
    if (r === 5) {
      const other = pick(KINDS.filter((k) => k !== kind && freed[k].length));
      if (other) return asPtr(pick(freed[other]));
    }
  }
}

/** Numbers that bun:ffi converts in ways the caller did not mean: validity is left to the library. */
const wildNumber = () =>
  pick([Number.NaN, 0.5, 1.5, -0.5, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 2 ** 31 + 0.5]);
const HUGE_U64 = [2n ** 64n - 1n, 2n ** 63n, 2n ** 63n - 1n, 2n ** 62n, 2n ** 50n, -1];

// ---- valid state builders --------------------------------------------------------------------------

function createBuffer(sentinel = false, bytes = int(1, 4096), kind = int(0, 1)): number {
  const o = out64();
  call("valid", "pkv_buffer_alloc", asPtr(rt), kind, bytes, o);
  const h = handleOut(o);
  live.buffer.push(h);
  buffers.set(h, { bytes, sentinel });
  return h;
}

const SHAPES = [
  { heads: 2, dim: 64, pageSize: 16, group: 2 },
  { heads: 1, dim: 128, pageSize: 8, group: 3 },
  { heads: 4, dim: 64, pageSize: 4, group: 1 },
];

function kvConfig(
  s: (typeof SHAPES)[number],
  layers: number,
  pages: number,
  rows: number,
  width: number,
  swap: number,
) {
  return new Int32Array([layers, pages, s.pageSize, s.heads, s.dim, 0, rows, width, swap, 0]);
}

function createPool(runtime: number, cfg: Int32Array, sentinel = false): number {
  const o = out64();
  call("valid", "pkv_kvpool_create", asPtr(runtime), cfg, o);
  const h = handleOut(o);
  const addresses = [out64(), out64()];
  call("valid", "pkv_kvpool_table_addresses", asPtr(h), addresses[0], addresses[1]);
  const [layers, pages, pageSize, heads, dim, , rows, width, swap] = Array.from(cfg) as number[];
  const table = new Int32Array(toArrayBuffer(Number(addresses[0]![0]) as Pointer, 0, rows! * width! * 4));
  const dirty = new Int32Array(toArrayBuffer(Number(addresses[1]![0]) as Pointer, 0, rows! * 4));
  // Every row holds valid, distinct pages and is dirty: the next plan uploads and checks them.
  for (let r = 0; r < rows!; r++) {
    for (let c = 0; c < width!; c++) table[r * width! + c] = (r * width! + c * 7 + 3) % pages!;
    dirty[r] = 0;
  }
  const state: PoolState = {
    cfg,
    layers: layers!,
    pages: pages!,
    pageSize: pageSize!,
    heads: heads!,
    dim: dim!,
    rows: rows!,
    width: width!,
    swap: swap!,
    table,
    dirty,
    sentinel,
    runtime,
    version: 0,
  };
  if (runtime === rt) {
    live.pool.push(h);
    pools.set(h, state);
  }
  return h;
}

// The sentinel pattern: slot s, layer l, element e of K (V: +1) as f16 bits, never NaN or Inf.
const patternWord = (layer: number, slot: number, e: number, v: number) =>
  0x3000 + ((layer * 131 + slot * 17 + e * 5 + v) & 0x3ff);

function tokenData(p: PoolState, layer: number, slots: Int32Array, v: number): Uint16Array {
  const row = p.heads * p.dim,
    data = new Uint16Array(slots.length * row);
  for (let t = 0; t < slots.length; t++)
    for (let e = 0; e < row; e++) data[t * row + e] = patternWord(layer, slots[t]!, e, v);
  return data;
}

function allSlots(p: PoolState): Int32Array {
  return Int32Array.from({ length: p.pages * p.pageSize }, (_, i) => i);
}

function createEngine(s: (typeof SHAPES)[number], maxBatch: number, policy = int(0, 2)): number {
  const config = new ArrayBuffer(32);
  new Int32Array(config, 0, 7).set([s.heads * s.group, s.heads, s.dim, s.pageSize, 0, policy, maxBatch]);
  new Float32Array(config, 28, 1)[0] = 0;
  const o = out64();
  if (chance(0.5)) call("valid", "pkv_decode_engine_create", asPtr(rt), new Uint8Array(config), o);
  else {
    // With settings: the defaults or a strategy forced onto small steps (pkv_engine_settings).
    const settings = defaultSettings();
    const force = int(0, 2);
    if (force === 0)
      settings[4] = 0; // the dynamic tail on every few-row step
    else if (force === 1) settings[6] = 1; // claiming on every few-row step
    call("valid", "pkv_decode_engine_create_with", asPtr(rt), new Uint8Array(config), null, settings, o);
  }
  const h = handleOut(o);
  live.engine.push(h);
  engines.set(h, { hq: s.heads * s.group, heads: s.heads, dim: s.dim, pageSize: s.pageSize, maxBatch });
  return h;
}

function defaultSettings(): Int32Array {
  const settings = new Int32Array(8);
  call("valid", "pkv_engine_settings_defaults", settings);
  return settings;
}

function poolFits(e: EngineState, p: PoolState) {
  return p.heads === e.heads && p.dim === e.dim && p.pageSize === e.pageSize;
}

/** A valid plan of engine `eh` over live pool `ph`: rows and lengths within the table. */
function validPlan(eh: number, ph: number): void {
  const e = engines.get(eh)!,
    p = pools.get(ph)!;
  const batch = int(1, Math.min(e.maxBatch, p.rows));
  const rows = new Int32Array(batch),
    lens = new Int32Array(batch);
  for (let b = 0; b < batch; b++) {
    rows[b] = int(0, p.rows - 1);
    lens[b] = int(1, Math.min(p.width * p.pageSize, 160));
  }
  const info = new Int32Array(PLAN_INFO.size / 4);
  call("valid", "pkv_decode_plan", asPtr(eh), asPtr(ph), batch, rows, lens, pick([-1, 0, 1, 2]), info);
  const q = new Uint16Array(batch * e.hq * e.dim).map((_, i) => 0x3000 + ((i * 37) & 0x7ff));
  e.plan = { id: info[4]!, pool: ph, batch, q, expected: new Map(), version: p.version };
}

/** A valid run of the engine's plan; its output must equal the first run's of that plan and layer. */
function validRun(eh: number): void {
  const e = engines.get(eh)!,
    plan = e.plan!,
    p = pools.get(plan.pool)!;
  const layer = int(0, p.layers - 1);
  const outBits = new Uint16Array(plan.batch * e.hq * e.dim);
  call(
    "valid",
    "pkv_decode_run",
    asPtr(eh),
    plan.id,
    layer,
    plan.q,
    outBits,
    chance(0.5) ? new Float32Array(plan.batch * e.hq) : null,
  );
  if (plan.version !== p.version) [plan.expected, plan.version] = [new Map(), p.version];
  const first = plan.expected.get(layer);
  if (!first) return void plan.expected.set(layer, outBits);
  // The CPU backend repeats itself exactly; GPU merges may add splits in another order (a few ulps).
  const close = (x: number, y: number) => (BACKEND === 0 ? false : Math.abs(x - y) <= 2e-3 + 4e-3 * Math.abs(x));
  const a = new Float16Array(first.buffer),
    b = new Float16Array(outBits.buffer);
  // (pages never written hold whatever the allocator left, NaN included: bits are compared first)
  for (let i = 0; i < a.length; i++)
    if (first[i] !== outBits[i] && !close(a[i]!, b[i]!) && !(Number.isNaN(a[i]!) && Number.isNaN(b[i]!)))
      violation(`run of plan ${plan.id} layer ${layer} changed: out[${i}] ${b[i]} vs first run ${a[i]}`);
}

function runnablePlan(): number | undefined {
  const ready = live.engine.filter((h) => engines.get(h)!.plan && pools.has(engines.get(h)!.plan!.pool));
  return ready.length ? pick(ready) : undefined;
}

// ---- the operations: each makes one or a few calls ---------------------------------------------------

type Op = () => void;
const ops: Op[] = [];
const op = (weight: number, fn: Op) => {
  for (let i = 0; i < weight; i++) ops.push(fn);
};

const liveOr = (kind: Kind) => (live[kind].length ? pick(live[kind]) : 0);
const scratchBuffer = () => {
  const list = live.buffer.filter((h) => !buffers.get(h)!.sentinel);
  return list.length ? pick(list) : createBuffer();
};
const scratchPool = () => {
  const list = live.pool.filter((h) => !pools.get(h)!.sentinel);
  return list.length ? pick(list) : 0;
};

// library-level calls that cannot fail
op(1, () => {
  noteCall(`#${++callIndex} status names and versions`);
  for (const code of [int(-5, 20), int(-(2 ** 31), 2 ** 31 - 1)])
    if (String(lib.pkv_status_name!(code)).length === 0) violation("pkv_status_name returned an empty name");
  if (lib.pkv_abi_version!() !== 1 || String(lib.pkv_version!()).length === 0) violation("version calls");
  if ((lib.pkv_cuda_device_count!() as number) < 0) violation("pkv_cuda_device_count < 0");
  if (lib.pkv_device_info_size!() !== 304 || lib.pkv_plan_info_size!() !== 64) violation("struct sizes changed");
  if (lib.pkv_kvpool_layout_size!() !== 64) violation("pkv_kvpool_layout size changed");
});

// runtime
op(2, () => {
  const h = badHandle("runtime");
  call("bad", pick(["pkv_runtime_destroy", "pkv_runtime_synchronize"]), h);
});
op(1, () => call("valid", "pkv_runtime_synchronize", asPtr(rt)));
op(1, () => call("bad", "pkv_runtime_create", pick([-1, 2, 99, 2 ** 31 - 1]), 0, out64()));
op(1, () => call("bad", "pkv_runtime_create", BACKEND, 0, null));
op(1, () => {
  if (chance(0.5)) call("bad", "pkv_device_info_get", badHandle("runtime"), new Uint8Array(304));
  else call("bad", "pkv_device_info_get", asPtr(rt), null);
});
op(1, () => call("valid", "pkv_device_info_get", asPtr(rt), new Uint8Array(304)));
// A short-lived runtime with children, destroyed: its handles join the freed ones (use after destroy).
op(1, () => {
  const o = out64();
  call("valid", "pkv_runtime_create", BACKEND, 0, o);
  const side = handleOut(o);
  const made: [Kind, number][] = [];
  call("valid", "pkv_buffer_alloc", asPtr(side), int(0, 1), int(1, 512), o);
  made.push(["buffer", handleOut(o)]);
  call("valid", "pkv_stream_create", asPtr(side), o);
  made.push(["stream", handleOut(o)]);
  call("valid", "pkv_event_create", asPtr(side), o);
  made.push(["event", handleOut(o)]);
  const pool = createPool(side, kvConfig(SHAPES[0]!, 1, 4, 2, 2, 1));
  made.push(["pool", pool]);
  call("valid", "pkv_runtime_destroy", asPtr(side));
  freed.runtime.push(side);
  for (const [kind, h] of made) freed[kind].push(h);
  const [kind, h] = pick(made);
  const destroyFn: Record<string, string> = {
    buffer: "pkv_buffer_free",
    stream: "pkv_stream_destroy",
    event: "pkv_event_destroy",
    pool: "pkv_kvpool_destroy",
  };
  call("bad", destroyFn[kind]!, asPtr(h));
  call("bad", "pkv_runtime_destroy", asPtr(side)); // double destroy
});

// buffers
op(2, () => void (live.buffer.length < 24 && createBuffer()));
op(2, () => {
  const h = scratchBuffer();
  if (live.buffer.length > 4) {
    call("valid", "pkv_buffer_free", asPtr(h));
    buffers.delete(h);
    forget("buffer", h);
    if (chance(0.5)) call("bad", "pkv_buffer_free", asPtr(h)); // double free
  }
});
op(2, () => {
  const r = int(0, 4);
  if (r === 0) call("bad", "pkv_buffer_alloc", badHandle("runtime"), 0, 16, out64());
  else if (r === 1) call("bad", "pkv_buffer_alloc", asPtr(rt), pick([-1, 2, 7, 2 ** 31 - 1]), 16, out64());
  else if (r === 2) call("bad", "pkv_buffer_alloc", asPtr(rt), int(0, 1), pick([0, ...HUGE_U64]), out64());
  else if (r === 3) call("bad", "pkv_buffer_alloc", asPtr(rt), int(0, 1), 16, null);
  else {
    const o = out64();
    if (call("wild", "pkv_buffer_alloc", asPtr(rt), int(0, 1), wildNumber(), o) === 0) {
      // (freed at once: a wild size may be GiBs, too much for later fills and copies)
      call("valid", "pkv_buffer_size", asPtr(handleOut(o)), out64());
      call("valid", "pkv_buffer_free", asPtr(handleOut(o)));
      freed.buffer.push(handleOut(o));
    }
  }
});
op(3, () => {
  const fn = pick(["pkv_buffer_address", "pkv_buffer_size", "pkv_buffer_kind"]);
  const o = fn === "pkv_buffer_kind" ? new Int32Array(1) : out64();
  if (chance(0.4)) call("valid", fn, asPtr(pick(live.buffer)), o);
  else if (chance(0.5)) call("bad", fn, badHandle("buffer"), o);
  else call("bad", fn, asPtr(pick(live.buffer)), null);
});
op(6, () => {
  // write / read: one argument certainly out of its range, or a valid scratch call
  const fn = pick(["pkv_buffer_write", "pkv_buffer_read"]);
  const h = pick(live.buffer),
    b = buffers.get(h)!;
  const host = new Uint8Array(64);
  const r = int(0, 5);
  if (r === 0) call("bad", fn, badHandle("buffer"), 0, host, 1);
  else if (r === 1) call("bad", fn, asPtr(h), pick([b.bytes + 1, b.bytes + int(1, 1000), ...HUGE_U64]), host, 1);
  else if (r === 2) call("bad", fn, asPtr(h), Math.min(b.bytes, int(0, 64)), host, pick([b.bytes + 1, ...HUGE_U64]));
  else if (r === 3) call("bad", fn, asPtr(h), 0, null, Math.min(b.bytes, 8));
  else if (r === 4 && (fn === "pkv_buffer_read" || !b.sentinel)) {
    const bytes = int(1, Math.min(64, b.bytes));
    call("valid", fn, asPtr(h), int(0, b.bytes - bytes), host, bytes);
  } else if (!b.sentinel) call("wild", fn, asPtr(h), wildNumber(), host, pick([Number.NaN, 0.5, 1.5]));
});
op(4, () => {
  const dst = pick(live.buffer),
    src = pick(live.buffer),
    d = buffers.get(dst)!,
    s = buffers.get(src)!;
  // one buffer: at most half of it, so that the ranges [size - bytes, size) and [0, bytes) stay apart
  const bytes = int(0, dst === src ? Math.floor(d.bytes / 2) : Math.min(d.bytes, s.bytes));
  const r = int(0, 7);
  if (r === 0) call("bad", "pkv_buffer_copy", badHandle("buffer"), 0, asPtr(src), 0, 1, null);
  else if (r === 1) call("bad", "pkv_buffer_copy", asPtr(dst), 0, badHandle("buffer"), 0, 1, null);
  else if (r === 2)
    call("bad", "pkv_buffer_copy", asPtr(dst), pick([d.bytes + 1, ...HUGE_U64]), asPtr(src), 0, 1, null);
  else if (r === 3)
    call("bad", "pkv_buffer_copy", asPtr(dst), 0, asPtr(src), 0, pick([s.bytes + d.bytes + 1, ...HUGE_U64]), null);
  else if (r === 4)
    call(
      "bad",
      "pkv_buffer_copy",
      asPtr(dst),
      0,
      asPtr(src),
      0,
      1,
      pick([badHandle("stream", false), asPtr(foreignStream)]),
    );
  else if (r === 5) call("bad", "pkv_buffer_copy", asPtr(foreignBuffer), 0, asPtr(src), 0, 1, null);
  else if (r === 6 && d.bytes > 1) {
    const n = int(2, d.bytes),
      at = int(0, d.bytes - n); // a copy within one buffer onto itself, shifted
    call("bad", "pkv_buffer_copy", asPtr(dst), at + int(0, n - 2), asPtr(dst), at, n - 1, null);
  } else if (!d.sentinel)
    call("valid", "pkv_buffer_copy", asPtr(dst), d.bytes - bytes, asPtr(src), 0, bytes, asPtr(liveOr("stream")));
});
op(3, () => {
  const h = pick(live.buffer),
    b = buffers.get(h)!;
  const r = int(0, 4);
  if (r === 0) call("bad", "pkv_buffer_fill", badHandle("buffer"), 0, 0, 1, null);
  else if (r === 1) call("bad", "pkv_buffer_fill", asPtr(h), 0, pick([256, 2 ** 31, 2 ** 32 - 1]), 1, null);
  else if (r === 2) call("bad", "pkv_buffer_fill", asPtr(h), pick([b.bytes + 1, ...HUGE_U64]), 0, 1, null);
  else if (r === 3)
    call("bad", "pkv_buffer_fill", asPtr(h), 0, 0, 1, pick([badHandle("stream", false), asPtr(foreignStream)]));
  else if (!b.sentinel) call("valid", "pkv_buffer_fill", asPtr(h), 0, int(0, 255), b.bytes, null);
});

// streams and events
op(2, () => {
  const o = out64();
  if (live.stream.length < 6 && chance(0.6)) {
    call("valid", "pkv_stream_create", asPtr(rt), o);
    live.stream.push(handleOut(o));
  } else if (live.stream.length) {
    const h = pick(live.stream);
    call("valid", "pkv_stream_destroy", asPtr(h));
    forget("stream", h);
  }
});
op(2, () => {
  const r = int(0, 2);
  if (r === 0) call("bad", "pkv_stream_create", asPtr(rt), null);
  else if (r === 1) call("bad", "pkv_stream_create", badHandle("runtime"), out64());
  else call("bad", pick(["pkv_stream_destroy", "pkv_stream_synchronize"]), badHandle("stream"));
});
op(1, () => live.stream.length && call("valid", "pkv_stream_synchronize", asPtr(pick(live.stream))));
op(2, () => {
  const o = out64();
  if (live.event.length < 6 && chance(0.6)) {
    call("valid", "pkv_event_create", asPtr(rt), o);
    live.event.push(handleOut(o));
  } else if (live.event.length) {
    const h = pick(live.event);
    call("valid", "pkv_event_destroy", asPtr(h));
    recorded.delete(h);
    forget("event", h);
  }
});
op(3, () => {
  if (!live.event.length) return;
  const h = pick(live.event);
  const r = int(0, 6);
  if (r === 0) {
    call("valid", "pkv_event_record", asPtr(h), asPtr(liveOr("stream")));
    recorded.add(h);
  } else if (r === 1)
    call("bad", "pkv_event_record", asPtr(h), pick([badHandle("stream", false), asPtr(foreignStream)]));
  else if (r === 2) {
    if (chance(0.3)) call("bad", "pkv_event_record", badHandle("event"), null);
    else call("bad", pick(["pkv_event_synchronize", "pkv_event_destroy"]), badHandle("event"));
  } else if (r === 3) call("valid", "pkv_event_synchronize", asPtr(h));
  else if (r === 4) {
    const other = pick(live.event);
    const both = recorded.has(h) && recorded.has(other);
    if (both) for (const ev of [h, other]) call("valid", "pkv_event_synchronize", asPtr(ev)); // CUDA: both complete
    call(both ? "valid" : "bad", "pkv_event_elapsed_ms", asPtr(h), asPtr(other), new Float32Array(1));
  } else if (r === 5)
    call("bad", "pkv_event_elapsed_ms", asPtr(h), pick([badHandle("event"), asPtr(foreignEvent)]), new Float32Array(1));
  else call("bad", "pkv_event_elapsed_ms", asPtr(h), asPtr(h), null);
});
op(1, () => {
  if (chance(0.5)) call("bad", "pkv_event_create", badHandle("runtime"), out64());
  else call("bad", "pkv_event_create", asPtr(rt), null);
});

// graphs (CUDA only; on the CPU backend capture is PKV_ERR_UNSUPPORTED), with the buffers each one's work uses
const graphBuffers = new Map<number, number[]>();
op(2, () => {
  const stream = asPtr(liveOr("stream"));
  if (BACKEND === 0) {
    if (chance(0.5)) call("bad", "pkv_capture_begin", asPtr(rt), stream);
    else call("bad", "pkv_capture_end", asPtr(rt), stream, out64());
    return;
  }
  // (buffers made before the capture: allocating is refused inside it)
  const victim = scratchBuffer(),
    copyDst = createBuffer(false, 256),
    copySrc = createBuffer(false, 256);
  call("bad", "pkv_capture_end", asPtr(rt), stream, out64()); // not capturing
  call("valid", "pkv_capture_begin", asPtr(rt), stream);
  call("bad", "pkv_capture_begin", asPtr(rt), stream); // already capturing
  if (stream) call("bad", "pkv_stream_destroy", stream); // a capturing stream
  // Calls that would wait for the GPU or free memory are refused, and the capture survives them.
  call("bad", "pkv_runtime_synchronize", asPtr(rt));
  call("bad", "pkv_buffer_free", asPtr(victim));
  const pool = pick(live.pool),
    p = pools.get(pool)!;
  call(
    "bad",
    "pkv_kvpool_read",
    asPtr(pool),
    0,
    1,
    Int32Array.of(0),
    new Uint16Array(p.heads * p.dim),
    new Uint16Array(p.heads * p.dim),
  );
  call("valid", "pkv_buffer_copy", asPtr(copyDst), 0, asPtr(copySrc), 0, 256, stream); // recorded
  const o = out64();
  call("valid", "pkv_capture_end", asPtr(rt), stream, o);
  const graph = handleOut(o);
  graphBuffers.set(graph, [copyDst, copySrc]);
  if (chance(0.5)) return void live.graph.push(graph);
  // A buffer the graph copies is freed: its launches are refused from then on.
  call("valid", "pkv_buffer_free", asPtr(copyDst));
  buffers.delete(copyDst);
  forget("buffer", copyDst);
  call("bad", "pkv_graph_launch", asPtr(graph), stream);
  call("valid", "pkv_graph_destroy", asPtr(graph));
  freed.graph.push(graph);
});
op(2, () => {
  const r = int(0, 3);
  if (r === 0) {
    if (chance(0.5)) call("bad", "pkv_graph_launch", badHandle("graph"), null);
    else call("bad", "pkv_graph_destroy", badHandle("graph"));
  } else if (r === 1) call("bad", "pkv_capture_begin", badHandle("runtime"), null);
  else if (r === 2)
    call("bad", "pkv_capture_end", asPtr(rt), pick([badHandle("stream", false), asPtr(foreignStream)]), out64());
  else if (live.graph.length) {
    const g = pick(live.graph);
    // Other operations may have freed a buffer the graph copies: then its launch is refused.
    const intact = graphBuffers.get(g)!.every((b) => buffers.has(b));
    call(intact ? "valid" : "bad", "pkv_graph_launch", asPtr(g), asPtr(liveOr("stream")));
    if (chance(0.5)) {
      call("valid", "pkv_graph_destroy", asPtr(g));
      forget("graph", g);
    }
  }
});

// probes
op(2, () => {
  const r = int(0, 5);
  if (r === 0) call("bad", "pkv_probe_read_bandwidth", badHandle("runtime"), 1 << 20, 1, new Float64Array(1));
  else if (r === 1)
    call(
      "bad",
      "pkv_probe_read_bandwidth",
      asPtr(rt),
      pick([0, 16, (1 << 20) + 8, (1 << 20) - 16]),
      1,
      new Float64Array(1),
    );
  else if (r === 2)
    call(
      "bad",
      "pkv_probe_read_bandwidth",
      asPtr(rt),
      pick([2n ** 64n - 16n, 2n ** 60n, 2n ** 50n]),
      1,
      new Float64Array(1),
    );
  else if (r === 3)
    call("bad", "pkv_probe_read_bandwidth", asPtr(rt), 1 << 20, pick([0, -1, 10001, -(2 ** 31)]), new Float64Array(1));
  else if (r === 4) call("bad", "pkv_probe_read_bandwidth", asPtr(rt), 1 << 20, 1, null);
  else if (chance(0.5)) call("bad", "pkv_flush_l2", badHandle("runtime"), null);
  else call("bad", "pkv_flush_l2", asPtr(rt), pick([badHandle("stream", false), asPtr(foreignStream)]));
});
op(1, () => {
  if (BACKEND === 0) call("valid", "pkv_probe_read_bandwidth", asPtr(rt), 1 << 20, 1, new Float64Array(1));
  call("valid", "pkv_flush_l2", asPtr(rt), asPtr(liveOr("stream")));
});

// reference decode
function referenceArgs() {
  const s = SHAPES[0]!,
    hq = s.heads * s.group,
    numPages = 6,
    batch = int(1, 3);
  const shape = new ArrayBuffer(24);
  new Int32Array(shape, 0, 5).set([hq, s.heads, s.dim, s.pageSize, 0]);
  const indptr = new Int32Array(batch + 1),
    lens = new Int32Array(batch),
    indices: number[] = [];
  for (let b = 0; b < batch; b++) {
    const pages = int(0, 2);
    for (let i = 0; i < pages; i++) indices.push(int(0, numPages - 1));
    indptr[b + 1] = indptr[b]! + pages;
    lens[b] = pages === 0 ? 0 : int((pages - 1) * s.pageSize + 1, pages * s.pageSize);
  }
  const pageElems = numPages * s.heads * s.pageSize * s.dim;
  return {
    shape: new Uint8Array(shape),
    batch,
    indptr,
    indices: Int32Array.from(indices.length ? indices : [0]),
    lens,
    k: new Uint16Array(pageElems).fill(0x3800),
    v: new Uint16Array(pageElems).fill(0x3400),
    numPages,
    q: new Uint16Array(batch * hq * s.dim).fill(0x3c00),
    out: new Uint16Array(batch * hq * s.dim),
    lse: new Float32Array(batch * hq),
    hasPages: indices.length > 0,
  };
}
op(4, () => {
  const a = referenceArgs();
  const list = () =>
    [a.shape, a.batch, a.indptr, a.indices, a.lens, a.k, a.v, a.numPages, a.q, a.out, a.lse] as unknown[];
  const args = list();
  const r = int(0, 9);
  if (r === 0) args[0] = null;
  else if (r === 1) {
    const field = pick([0, 1, 2, 3, 4]); // dtype (4) 3 is FP8_E4M3_BF16, a valid dtype
    new Int32Array(a.shape.buffer)[field] = pick([-1, field === 4 ? 4 : 3, 100, 17, 2 ** 31 - 1]);
  } else if (r === 2) new Float32Array(a.shape.buffer)[5] = pick([Number.NaN, -1, Number.POSITIVE_INFINITY]);
  else if (r === 3) args[1] = pick([-1, -(2 ** 31)]);
  else if (r === 4) args[pick([2, 4, 8, 9])] = null;
  else if (r === 5 && a.hasPages)
    args[pick([3, 5, 6])] = null; // page_indices read before its NULL check
  else if (r === 6)
    a.indptr[int(1, a.batch)] = pick([-1, -(2 ** 31)]); // decreasing (larger would lie about the array)
  else if (r === 7 && a.hasPages) a.indices[int(0, a.indices.length - 1)] = pick([-1, a.numPages, 2 ** 31 - 1]);
  else if (r === 8) a.lens[int(0, a.batch - 1)] = pick([-1, 10 ** 6, 2 ** 31 - 1]);
  else if (r === 9) args[7] = -1;
  else return void call("valid", "pkv_reference_decode", ...list());
  call("bad", "pkv_reference_decode", ...args);
});

// KV pools
op(2, () => {
  if (live.pool.length < 6 && chance(0.6)) {
    const s = pick(SHAPES);
    createPool(rt, kvConfig(s, int(1, 3), int(4, 24), int(1, 6), int(1, 8), int(0, 8)));
  } else {
    const h = scratchPool();
    if (!h) return;
    call("valid", "pkv_kvpool_destroy", asPtr(h));
    pools.delete(h);
    forget("pool", h);
  }
});
op(3, () => {
  const s = pick(SHAPES),
    cfg = kvConfig(s, 2, 8, 2, 4, 2);
  const r = int(0, 9);
  if (r === 0) return void call("bad", "pkv_kvpool_create", badHandle("runtime"), cfg, out64());
  if (r === 1)
    return void call("bad", "pkv_kvpool_create", asPtr(rt), ...(chance(0.5) ? [null, out64()] : [cfg, null]));
  if (r === 2) cfg[pick([0, 1, 2, 3, 4, 6, 7])] = pick([0, -1, -(2 ** 31)]);
  else if (r === 3) {
    const field = pick([2, 4, 5]); // dtype (5) 3 is FP8_E4M3_BF16, a valid dtype
    cfg[field] = pick([field === 5 ? 4 : 3, 100, 1000, 7]);
  } else if (r === 4) cfg[3] = pick([0, 257, -1]);
  else if (r === 5)
    cfg[pick([5, 9])] = pick([4, -1]); // dtype, reserved
  else if (r === 6)
    cfg.set([4096, 2 ** 31 / 256 - 1, 256, 256, 256, 0, 1, 1, 2 ** 31 - 1], 0); // swap bytes overflow 63 bits
  else if (r === 7)
    cfg.set([4096, 1 << 20, 256, 8, 128], 0); // 2^52 bytes: more than any memory
  else if (r === 8)
    cfg[8] = 2 ** 31 - 1; // swap bytes beyond any memory
  else cfg.set([1, 16, 16, 2, 64, 0, 2 ** 16, 2 ** 16], 0); // a block table beyond its limit
  call("bad", "pkv_kvpool_create", asPtr(rt), cfg, out64());
});
op(2, () => {
  const h = pick(live.pool),
    p = pools.get(h)!;
  const r = int(0, 3);
  if (r === 0) call("bad", "pkv_kvpool_table_addresses", badHandle("pool"), out64(), out64());
  else if (r === 1) call("bad", "pkv_kvpool_table_addresses", asPtr(h), chance(0.5) ? null : out64(), null);
  else if (r === 2)
    call("bad", "pkv_kvpool_layer_addresses", asPtr(h), pick([-1, p.layers, 2 ** 31 - 1]), out64(), out64());
  else call("valid", "pkv_kvpool_layer_addresses", asPtr(h), int(0, p.layers - 1), out64(), out64());
});

function randomSlots(p: PoolState, n: number): Int32Array {
  return Int32Array.from({ length: n }, () => int(0, p.pages * p.pageSize - 1));
}
function distinctIds(count: number, limit: number): Int32Array {
  const ids = Array.from({ length: limit }, (_, i) => i);
  for (let i = limit - 1; i > 0; i--) {
    const j = int(0, i);
    [ids[i], ids[j]] = [ids[j]!, ids[i]!];
  }
  return Int32Array.from(ids.slice(0, count));
}
op(8, () => {
  // token writes and reads, host arrays
  const fn = pick(["pkv_kvpool_write", "pkv_kvpool_read"]);
  const h = pick(live.pool),
    p = pools.get(h)!;
  const n = int(1, 8),
    slots = randomSlots(p, n);
  const k = new Uint16Array(n * p.heads * p.dim),
    v = new Uint16Array(n * p.heads * p.dim);
  const r = int(0, 6);
  if (r === 0) call("bad", fn, badHandle("pool"), 0, n, slots, k, v);
  else if (r === 1) call("bad", fn, asPtr(h), pick([-1, p.layers, 2 ** 31 - 1, -(2 ** 31)]), n, slots, k, v);
  else if (r === 2) call("bad", fn, asPtr(h), 0, pick([-1, -(2 ** 31)]), slots, k, v);
  else if (r === 3) {
    slots[int(0, n - 1)] = pick([-1, p.pages * p.pageSize, 2 ** 31 - 1, -(2 ** 31)]);
    call("bad", fn, asPtr(h), 0, n, slots, k, v);
  } else if (r === 4) {
    const args: unknown[] = [asPtr(h), 0, n, slots, k, v];
    args[pick([3, 4, 5])] = null;
    call("bad", fn, ...args);
  } else if (r === 5 && (fn === "pkv_kvpool_read" || !p.sentinel)) {
    const layer = int(0, p.layers - 1);
    call("valid", fn, asPtr(h), layer, n, slots, fn === "pkv_kvpool_write" ? tokenData(p, layer, slots, 0) : k, v);
  } else if (!p.sentinel) call("wild", fn, asPtr(h), wildNumber(), chance(0.5) ? n : wildNumber(), slots, k, v);
});
op(2, () => {
  // FP8: raw reads (every fuzzed pool stores 16-bit values, so each is refused) and the host conversions
  const h = pick(live.pool),
    p = pools.get(h)!;
  const n = int(1, 4),
    slots = randomSlots(p, n);
  const codes = () => new Uint8Array(n * p.heads * p.dim),
    scales = () => new Float32Array(n * p.heads);
  const r = int(0, 5);
  if (r === 0) call("bad", "pkv_kvpool_read_raw", badHandle("pool"), 0, n, slots, codes(), codes(), scales(), scales());
  else if (r === 1) {
    const args: unknown[] = [asPtr(h), pick([0, -1, p.layers]), n, slots, codes(), codes(), scales(), scales()];
    if (chance(0.5)) args[pick([3, 4, 5, 6, 7])] = null;
    call("bad", "pkv_kvpool_read_raw", ...args);
  } else {
    const fn = pick(["pkv_fp8_e4m3_encode", "pkv_fp8_e4m3_decode"]);
    const m = int(0, 64);
    const input =
      fn === "pkv_fp8_e4m3_encode"
        ? new Float32Array(m).map(() => wildNumber())
        : new Uint8Array(m).map(() => int(0, 255));
    const output = fn === "pkv_fp8_e4m3_encode" ? new Uint8Array(m) : new Float32Array(m);
    if (r === 2) call("bad", fn, pick([-1, -(2 ** 40)]), input, output);
    else if (r === 3 && m > 0) call("bad", fn, m, ...(chance(0.5) ? [null, output] : [input, null]));
    else call("valid", fn, m, input, output);
  }
});
op(4, () => {
  // token writes from device buffers: ranges, alignment, runtimes
  const h = pick(live.pool),
    p = pools.get(h)!;
  const n = int(1, 4),
    slots = randomSlots(p, n),
    bytes = n * p.heads * p.dim * 2;
  const fits = live.buffer.filter((b) => buffers.get(b)!.bytes >= bytes);
  const kb = fits.length ? pick(fits) : createBuffer(false, bytes + 32);
  const r = int(0, 6);
  const args: unknown[] = [asPtr(h), 0, n, slots, asPtr(kb), 0, asPtr(kb), 0];
  if (r === 0) args[0] = badHandle("pool");
  else if (r === 1) args[pick([4, 6])] = pick([badHandle("buffer"), asPtr(foreignBuffer)]);
  else if (r === 2)
    args[pick([5, 7])] = pick([8, 1, 2 ** 63 - 2 ** 10, ...HUGE_U64]); // unaligned or out of range
  else if (r === 3)
    args[5] = (Math.floor((buffers.get(kb)!.bytes - bytes) / 16) + 1) * 16; // aligned, one step too far
  else if (r === 4) args[1] = pick([-1, p.layers]);
  else if (r === 5) slots[0] = p.pages * p.pageSize;
  else if (!p.sentinel) return void call("valid", "pkv_kvpool_write_device", ...args);
  else args[3] = null;
  call("bad", "pkv_kvpool_write_device", ...args);
});
op(4, () => {
  // page copies
  const h = pick(live.pool),
    p = pools.get(h)!;
  const n = int(1, Math.min(4, Math.floor(p.pages / 2)));
  const ids = distinctIds(2 * n, p.pages),
    src = ids.subarray(0, n),
    dst = ids.subarray(n);
  const r = int(0, 5);
  if (r === 0) call("bad", "pkv_kvpool_copy_pages", badHandle("pool"), n, src, dst);
  else if (r === 1) call("bad", "pkv_kvpool_copy_pages", asPtr(h), pick([-1, -(2 ** 31)]), src, dst);
  else if (r === 2) {
    (chance(0.5) ? src : dst)[int(0, n - 1)] = pick([-1, p.pages, 2 ** 31 - 1]);
    call("bad", "pkv_kvpool_copy_pages", asPtr(h), n, src, dst);
  } else if (r === 3 && n > 1) {
    dst[1] = dst[0]!; // written twice
    call("bad", "pkv_kvpool_copy_pages", asPtr(h), n, src, dst);
  } else if (r === 4) {
    dst[0] = src[n - 1]!; // written and read
    call("bad", "pkv_kvpool_copy_pages", asPtr(h), n, src, dst);
  } else if (!p.sentinel) call("valid", "pkv_kvpool_copy_pages", asPtr(h), n, src, dst);
  else call("bad", "pkv_kvpool_copy_pages", asPtr(h), n, null, dst);
});
op(5, () => {
  // swaps: ranges, repeated pages or slots, pools without swap space
  const fn = pick(["pkv_kvpool_swap_out", "pkv_kvpool_swap_in"]);
  const h = pick(live.pool),
    p = pools.get(h)!;
  const n = int(1, Math.max(1, Math.min(4, p.swap)));
  const pages = distinctIds(n, p.pages),
    slots = distinctIds(Math.min(n, p.swap), Math.max(p.swap, 1));
  const ordered = (a: Int32Array, b: Int32Array) => (fn === "pkv_kvpool_swap_out" ? [a, b] : [b, a]);
  const [first, second] = ordered(pages, slots);
  const r = int(0, 5);
  if (p.swap < n) return void call("bad", fn, asPtr(h), n, first, second); // too few slots, or none
  if (r === 0) call("bad", fn, badHandle("pool"), n, first, second);
  else if (r === 1) call("bad", fn, asPtr(h), pick([-1, -(2 ** 31)]), first, second);
  else if (r === 2) {
    (chance(0.5) ? pages : slots)[int(0, n - 1)] = chance(0.5) ? -1 : 2 ** 31 - 1;
    call("bad", fn, asPtr(h), n, first, second);
  } else if (r === 3 && n > 1) {
    const ids = chance(0.5) ? pages : slots;
    ids[1] = ids[0]!; // two pages into one slot, or one slot into two pages
    call("bad", fn, asPtr(h), n, first, second);
  } else if (r === 4) call("bad", fn, asPtr(h), n, chance(0.5) ? null : first, null);
  else if (fn === "pkv_kvpool_swap_out" || !p.sentinel) call("valid", fn, asPtr(h), n, first, second);
});

// decode engines, plans and runs
op(2, () => {
  if (live.engine.length < 5 && chance(0.6)) {
    createEngine(pick(SHAPES), int(1, 6));
  } else if (live.engine.length > 1) {
    const h = pick(live.engine.filter((e) => e !== sentinelEngine));
    call("valid", "pkv_decode_engine_destroy", asPtr(h));
    engines.delete(h);
    forget("engine", h);
  }
});
op(3, () => {
  const config = new ArrayBuffer(32),
    ints = new Int32Array(config, 0, 7),
    scale = new Float32Array(config, 28, 1);
  ints.set([4, 2, 64, 16, 0, 2, 4]);
  const r = int(0, 8);
  if (r === 0)
    return void call("bad", "pkv_decode_engine_create", badHandle("runtime"), new Uint8Array(config), out64());
  if (r === 1)
    return void call(
      "bad",
      "pkv_decode_engine_create",
      asPtr(rt),
      ...(chance(0.5) ? [null, out64()] : [new Uint8Array(config), null]),
    );
  if (r === 2) ints[2] = pick([0, 32, 100, 512]);
  else if (r === 3) ints[3] = pick([0, 3, 512, -16]);
  else if (r === 4)
    ints.set(
      pick([
        [34, 2],
        [3, 2],
        [0, 2],
        [2, 0],
        [17, 1],
      ]),
      0,
    ); // group size
  else if (r === 5) ints[5] = pick([-1, 3, 99]);
  else if (r === 6) ints[6] = pick([0, -1, 2 ** 21, 2 ** 31 - 1]);
  else if (r === 7) scale[0] = pick([Number.NaN, -1, Number.POSITIVE_INFINITY]);
  else ints[4] = pick([4, -1, 9]);
  call("bad", "pkv_decode_engine_create", asPtr(rt), new Uint8Array(config), out64());
});
op(2, () => {
  // engine settings: read back, and bad settings, pools or outputs at creation
  const r = int(0, 6);
  if (r === 0) return void call("valid", "pkv_decode_engine_settings", asPtr(pick(live.engine)), new Int32Array(8));
  if (r === 1)
    return void call(
      "bad",
      "pkv_decode_engine_settings",
      ...(chance(0.5) ? [badHandle("engine"), new Int32Array(8)] : [asPtr(pick(live.engine)), null]),
    );
  if (r === 2) return void call("bad", "pkv_engine_settings_defaults", null);
  const config = new ArrayBuffer(32);
  new Int32Array(config, 0, 7).set([4, 2, 64, 16, 0, 2, 4]);
  const settings = defaultSettings();
  if (r === 3)
    return void call(
      "bad",
      "pkv_decode_engine_create_with",
      asPtr(rt),
      new Uint8Array(config),
      badHandle("pool", false),
      settings,
      out64(),
    );
  if (r === 4)
    return void call("bad", "pkv_decode_engine_create_with", asPtr(rt), new Uint8Array(config), null, settings, null);
  // one field out of its range: size, math, loader, tail percent, tail splits, tail end, claim tiles, shared prefix
  const field = int(0, 7);
  settings[field] = pick(
    [[-1, 0, 31, 33], [-1, 3, 99], [-1, 3, 99], [-1, 91, 2 ** 31 - 1], [-1], [-1], [-1], [3, -1]][field]!,
  );
  call("bad", "pkv_decode_engine_create_with", asPtr(rt), new Uint8Array(config), null, settings, out64());
});
op(2, () => {
  const h = pick(live.engine),
    cells = 11 * 14;
  const table = new Int8Array(cells).map(() => int(-1, 1));
  const r = int(0, 4);
  if (r === 0) call("bad", "pkv_decode_set_policy_table", badHandle("engine"), table, cells);
  else if (r === 1)
    call("bad", "pkv_decode_set_policy_table", asPtr(h), table, pick([1, -1, cells - 1, cells + 1, 2 ** 31 - 1]));
  else if (r === 2) call("bad", "pkv_decode_set_policy_table", asPtr(h), null, cells);
  else if (r === 3) {
    table[int(0, cells - 1)] = pick([2, -2, 127, -128]);
    call("bad", "pkv_decode_set_policy_table", asPtr(h), table, cells);
  } else if (chance(0.5)) call("valid", "pkv_decode_set_policy_table", asPtr(h), table, cells);
  else call("valid", "pkv_decode_set_policy_table", asPtr(h), chance(0.5) ? table : null, 0); // clears it
});
op(4, () => {
  // plans with several query tokens per row, and the plan's query-token count
  const eh = pick(live.engine),
    e = engines.get(eh)!;
  const fitting = live.pool.filter((p) => poolFits(e, pools.get(p)!));
  if (!fitting.length) return;
  const ph = pick(fitting),
    p = pools.get(ph)!;
  const batch = int(1, Math.min(e.maxBatch, p.rows));
  const rows = Int32Array.from({ length: batch }, () => int(0, p.rows - 1));
  const lens = Int32Array.from({ length: batch }, () => int(1, Math.min(p.width * p.pageSize, 160)));
  const qLens = lens.map((len) => int(1, Math.min(len, 20)));
  const info = new Int32Array(PLAN_INFO.size / 4);
  const args: unknown[] = [asPtr(eh), asPtr(ph), batch, rows, lens, qLens, -1, info];
  const b = int(0, batch - 1);
  const r = int(0, 6);
  if (r === 0) args[0] = badHandle("engine");
  else if (r === 1) args[2] = pick([0, -1, e.maxBatch + 1, 2 ** 31 - 1]);
  else if (r === 2) args[pick([3, 4, 7])] = null;
  else if (r === 3) qLens[b] = pick([0, -1, lens[b]! + 1, 2 ** 31 - 1]);
  else if (r === 4) args[6] = pick([-2, 3, 2 ** 31 - 1]);
  else if (r === 5) {
    const id = pick([-1, 0, (e.plan?.id ?? 0) + 1000]);
    return void call(
      "bad",
      "pkv_decode_plan_query_tokens",
      pick([badHandle("engine"), asPtr(eh)]),
      id,
      new Int32Array(1),
    );
  } else {
    call("valid", "pkv_decode_plan_q", ...args);
    const tokens = new Int32Array(1);
    call("valid", "pkv_decode_plan_query_tokens", asPtr(eh), info[4]!, tokens);
    const q = new Uint16Array(tokens[0]! * e.hq * e.dim).map((_, i) => 0x3000 + ((i * 37) & 0x7ff));
    e.plan = { id: info[4]!, pool: ph, batch: tokens[0]!, q, expected: new Map(), version: p.version };
    e.plan.multiquery = tokens[0]! > batch;
    return;
  }
  call("bad", "pkv_decode_plan_q", ...args);
});
op(1, () => {
  // the tensor-core probe: refused on the CPU backend, and with bad arguments anywhere
  const args: unknown[] = [asPtr(rt), pick([0, 1]), int(1, 3), new Float64Array(1)];
  const r = int(0, 3);
  if (r === 0) args[0] = badHandle("runtime");
  else if (r === 1) args[1] = pick([-1, 2, 2 ** 31 - 1]);
  else if (r === 2) args[2] = pick([0, -1, 1001]);
  else if (r === 3) args[3] = null;
  call("bad", "pkv_probe_mma_tflops", ...args);
});
op(2, () => {
  // the multi-query reference: each row's query count 0..its length
  const a = referenceArgs();
  const hq = new Int32Array(a.shape.buffer)[0]!,
    dim = new Int32Array(a.shape.buffer)[2]!;
  const qIndptr = new Int32Array(a.batch + 1);
  for (let b = 0; b < a.batch; b++) qIndptr[b + 1] = qIndptr[b]! + int(0, Math.min(a.lens[b]!, 3));
  const tokens = qIndptr[a.batch]!;
  const q = new Uint16Array(Math.max(1, tokens) * hq * dim).fill(0x3c00);
  const args: unknown[] = [
    a.shape,
    a.batch,
    qIndptr,
    a.indptr,
    a.indices,
    a.lens,
    a.k,
    a.v,
    a.numPages,
    q,
    new Uint16Array(q.length),
    new Float32Array(Math.max(1, tokens) * hq),
  ];
  const r = int(0, 5);
  if (r === 0) args[0] = null;
  else if (r === 1) args[pick([2, 3, 5])] = null;
  else if (r === 2) qIndptr[0] = pick([1, -1]);
  else if (r === 3)
    qIndptr[a.batch] = qIndptr[a.batch - 1]! + a.lens[a.batch - 1]! + 1; // more queries than tokens
  else if (r === 4) args[1] = pick([-1, -(2 ** 31)]);
  else return void call("valid", "pkv_reference_multiquery", ...args);
  call("bad", "pkv_reference_multiquery", ...args);
});
op(8, () => {
  // plans
  const eh = pick(live.engine),
    e = engines.get(eh)!;
  const fitting = live.pool.filter((p) => poolFits(e, pools.get(p)!));
  if (!fitting.length) return;
  const ph = pick(fitting),
    p = pools.get(ph)!;
  const batch = int(1, Math.min(e.maxBatch, p.rows));
  const rows = Int32Array.from({ length: batch }, () => int(0, p.rows - 1));
  const lens = Int32Array.from({ length: batch }, () => int(1, p.width * p.pageSize));
  const args: unknown[] = [asPtr(eh), asPtr(ph), batch, rows, lens, -1, new Int32Array(PLAN_INFO.size / 4)];
  const r = int(0, 9);
  if (r === 0) args[0] = badHandle("engine");
  else if (r === 1) args[1] = pick([badHandle("pool"), asPtr(foreignPool)]);
  else if (r === 2) args[2] = pick([0, -1, e.maxBatch + 1, 2 ** 31 - 1]);
  else if (r === 3) args[pick([3, 4, 6])] = null;
  else if (r === 4) rows[int(0, batch - 1)] = pick([-1, p.rows, 2 ** 31 - 1]);
  else if (r === 5) lens[int(0, batch - 1)] = pick([0, -1, p.width * p.pageSize + 1, 2 ** 31 - 1]);
  else if (r === 6) args[5] = pick([-2, 3, 2 ** 31 - 1]);
  else if (r === 7) {
    const other = live.pool.filter((q) => !poolFits(e, pools.get(q)!));
    if (!other.length) return;
    args[1] = asPtr(pick(other)); // another shape
  } else return void validPlan(eh, ph);
  call("bad", "pkv_decode_plan", ...args);
});
op(8, () => {
  const eh = runnablePlan();
  if (eh === undefined) return;
  const e = engines.get(eh)!,
    plan = e.plan!,
    p = pools.get(plan.pool)!;
  const r = int(0, 5);
  const q = plan.q,
    outBits = new Uint16Array(plan.batch * e.hq * e.dim);
  if (r === 0) call("bad", "pkv_decode_run", badHandle("engine"), plan.id, 0, q, outBits, null);
  else if (r === 1)
    call("bad", "pkv_decode_run", asPtr(eh), pick([plan.id + 1, plan.id - 1, 0, -1]), 0, q, outBits, null);
  else if (r === 2)
    call("bad", "pkv_decode_run", asPtr(eh), plan.id, pick([-1, p.layers, 2 ** 31 - 1]), q, outBits, null);
  else if (r === 3) call("bad", "pkv_decode_run", asPtr(eh), plan.id, 0, chance(0.5) ? null : q, null, null);
  else validRun(eh);
});
op(5, () => {
  const eh = runnablePlan();
  if (eh === undefined) return;
  const e = engines.get(eh)!,
    plan = e.plan!;
  const io = plan.batch * e.hq * e.dim * 2,
    lseBytes = plan.batch * e.hq * 4,
    need = 2 * io + lseBytes;
  const big = live.buffer.filter((b) => buffers.get(b)!.bytes >= need && !buffers.get(b)!.sentinel);
  const buf = big.length ? pick(big) : createBuffer(false, need + 64);
  // q at 0, out after it (io is a multiple of 128 bytes), lse after both
  const args: unknown[] = [asPtr(eh), plan.id, 0, asPtr(buf), 0, asPtr(buf), io, null, 0, null];
  const r = int(0, 8);
  if (r === 0) args[pick([3, 5])] = pick([badHandle("buffer"), asPtr(foreignBuffer)]);
  else if (r === 1)
    args[pick([4, 6])] = pick([8, 4, 1]); // unaligned
  else if (r === 2)
    args[pick([4, 6])] = pick([(Math.floor((buffers.get(buf)!.bytes - io) / 16) + 1) * 16, ...HUGE_U64]);
  else if (r === 3)
    [args[7], args[8]] = [asPtr(buf), pick([2 * io + 2, 1, 2 ** 40])]; // lse unaligned or out of range
  else if (r === 4) args[9] = pick([badHandle("stream", false), asPtr(foreignStream)]);
  else if (r === 5) args[1] = plan.id + 1;
  else if (r === 6) [args[7], args[8]] = [badHandle("buffer", false), 0];
  else if (r === 7)
    [args[6], args[7], args[8]] = pick([
      [io - 16, null, 0],
      [io, asPtr(buf), io + 16 * int(0, 1)],
      [io, asPtr(buf), 0],
    ]); // overlaps
  else {
    if (chance(0.5)) [args[7], args[8]] = [asPtr(buf), 2 * io];
    return void call("valid", "pkv_decode_run_device", ...args.slice(0, 9), asPtr(liveOr("stream")));
  }
  call("bad", "pkv_decode_run_device", ...args);
});
op(2, () => {
  // A plan whose pool is destroyed cannot run, even if a new pool is made right after.
  const eh = runnablePlan();
  if (eh === undefined) return;
  const e = engines.get(eh)!,
    plan = e.plan!,
    p = pools.get(plan.pool)!;
  if (p.sentinel) return;
  call("valid", "pkv_kvpool_destroy", asPtr(plan.pool));
  pools.delete(plan.pool);
  forget("pool", plan.pool);
  createPool(rt, p.cfg);
  call("bad", "pkv_decode_run", asPtr(eh), plan.id, 0, plan.q, new Uint16Array(plan.q.length), null);
});
op(3, () => {
  // The pinned table scribbled on after the plan (no dirty mark): the run uses what the plan validated.
  // Marked dirty, the next plan refuses the garbage and leaves the current plan in place.
  const e = engines.get(sentinelEngine)!,
    p = pools.get(sentinelPool)!;
  if (e.plan?.pool !== sentinelPool) validPlan(sentinelEngine, sentinelPool);
  const saved = p.table.slice();
  for (let i = 0; i < p.table.length; i++)
    p.table[i] = pick([-1, p.pages, 2 ** 31 - 1, -(2 ** 31), int(0, p.pages - 1)]);
  p.table[0] = -1;
  validRun(sentinelEngine);
  const savedDirty = p.dirty.slice();
  p.dirty.fill(0);
  const rows = Int32Array.from({ length: p.rows }, (_, r) => r),
    lens = new Int32Array(p.rows).fill(p.width * p.pageSize);
  call(
    "bad",
    "pkv_decode_plan",
    asPtr(sentinelEngine),
    asPtr(sentinelPool),
    Math.min(p.rows, e.maxBatch),
    rows,
    lens,
    -1,
    new Int32Array(PLAN_INFO.size / 4),
  );
  p.table.set(saved);
  p.dirty.set(savedDirty);
  validRun(sentinelEngine);
});

// ---- interop: caller memory and streams, memory figures, pools over caller pages, plans from caller tables

// Memory "the caller" owns for the round: our own allocations (never freed by an op), wrapped by address.
const BACKING_BYTES = 8192;
let backingDevice = 0,
  backingPinned = 0;
interface WrappedPool {
  h: number;
  engine: number; // an engine of its own, made for this pool (kept out of `engines`: its plans are not theirs)
  maxBatch: number; // the engine's
  shape: (typeof SHAPES)[number];
  layers: number;
  pages: number;
  rows: number;
  width: number;
  k: BigUint64Array;
  v: BigUint64Array;
}
const wrappedPools: WrappedPool[] = [];

function addressOf(h: number): number {
  const o = out64();
  call("valid", "pkv_buffer_address", asPtr(h), o);
  return Number(o[0]);
}

/** A fresh allocation of ours, not in live.buffer, standing in for a framework's tensor. */
function callerAllocation(bytes: number, kind = 0): number {
  const o = out64();
  call("valid", "pkv_buffer_alloc", asPtr(rt), kind, bytes, o);
  return addressOf(handleOut(o));
}

op(2, () => {
  const kind = int(0, 1),
    at = 16 * int(0, 255);
  const o = out64();
  call(
    "valid",
    "pkv_buffer_wrap",
    asPtr(rt),
    kind,
    (kind ? backingPinned : backingDevice) + at,
    int(1, BACKING_BYTES - at),
    o,
  );
  const h = handleOut(o);
  live.buffer.push(h);
  buffers.set(h, { bytes: Number(0), sentinel: false });
  const size = out64();
  call("valid", "pkv_buffer_size", asPtr(h), size);
  buffers.get(h)!.bytes = Number(size[0]);
  const wrapped = new Int32Array(1);
  call("valid", "pkv_buffer_is_wrapped", asPtr(h), wrapped);
  if (wrapped[0] !== 1) violation("a wrapped buffer says it is not wrapped");
});
op(3, () => {
  const r = int(0, 7);
  const o = out64();
  if (r === 0) call("bad", "pkv_buffer_wrap", badHandle("runtime"), 0, backingDevice, 16, o);
  else if (r === 1) call("bad", "pkv_buffer_wrap", asPtr(rt), pick([-1, 2, 2 ** 31 - 1]), backingDevice, 16, o);
  else if (r === 2) call("bad", "pkv_buffer_wrap", asPtr(rt), 0, backingDevice, 0, o);
  else if (r === 3) call("bad", "pkv_buffer_wrap", asPtr(rt), 0, 0, 64, o);
  else if (r === 4) call("bad", "pkv_buffer_wrap", asPtr(rt), 0, backingDevice + pick([1, 4, 8, 12]), 16, o);
  else if (r === 5) call("bad", "pkv_buffer_wrap", asPtr(rt), 0, pick([2n ** 64n - 16n, 2n ** 63n]), pick(HUGE_U64), o);
  else if (r === 6) call("bad", "pkv_buffer_wrap", asPtr(rt), 0, backingDevice, 16, null);
  else if (chance(0.5)) call("bad", "pkv_buffer_is_wrapped", badHandle("buffer"), new Int32Array(1));
  else call("bad", "pkv_buffer_is_wrapped", asPtr(scratchBuffer()), null);
});
op(1, () => {
  const wrapped = new Int32Array(1);
  call("valid", "pkv_buffer_is_wrapped", asPtr(scratchBuffer()), wrapped);
});
// Streams: on CUDA only the legacy default stream is certainly live (a wrapped stream of ours would dangle once
// ours is destroyed); on the CPU backend any value is kept as it is.
op(2, () => {
  const o = out64();
  call("valid", "pkv_stream_wrap", asPtr(rt), BACKEND === 1 ? 0 : pick([0, 1, 0x1234, 2 ** 47 - 16]), o);
  const h = handleOut(o);
  const native = out64();
  call("valid", "pkv_stream_native", asPtr(h), native);
  if (BACKEND === 0 && live.stream.length < 8) live.stream.push(h);
  else {
    call("valid", "pkv_stream_destroy", asPtr(h));
    forget("stream", h);
  }
});
op(2, () => {
  const r = int(0, 3);
  if (r === 0) call("bad", "pkv_stream_wrap", badHandle("runtime"), 0, out64());
  else if (r === 1) call("bad", "pkv_stream_wrap", asPtr(rt), 0, null);
  else if (r === 2) call("bad", "pkv_stream_native", badHandle("stream"), out64());
  else if (live.stream.length) call("bad", "pkv_stream_native", asPtr(pick(live.stream)), null);
  else call("bad", "pkv_stream_native", null, out64());
});
op(1, () => live.stream.length && call("valid", "pkv_stream_native", asPtr(pick(live.stream)), out64()));
// Memory figures and page bytes.
op(1, () => {
  const free = out64(),
    total = out64();
  call("valid", "pkv_runtime_memory_info", asPtr(rt), free, total);
  if (free[0]! > total[0]! || total[0] === 0n) violation(`memory info: free ${free[0]} of total ${total[0]}`);
});
op(1, () => {
  const r = int(0, 2);
  if (r === 0) call("bad", "pkv_runtime_memory_info", badHandle("runtime"), out64(), out64());
  else call("bad", "pkv_runtime_memory_info", asPtr(rt), r === 1 ? null : out64(), r === 2 ? null : out64());
});
op(1, () => {
  const s = pick(SHAPES);
  const cfg = kvConfig(s, int(1, 4), int(1, 64), 2, 2, 0);
  const o = out64();
  call("valid", "pkv_kv_page_bytes", cfg, o);
  if (Number(o[0]) !== cfg[0]! * 2 * s.heads * s.pageSize * s.dim * 2) violation(`pkv_kv_page_bytes: ${o[0]}`);
});
/** A pool configuration with one field made invalid: layers, page size, KV heads or head dim. */
function badKvConfig(): Int32Array {
  const cfg = kvConfig(pick(SHAPES), 2, 4, 2, 2, 0);
  const [field, values] = pick([
    [0, [0, -1, 5000]],
    [2, [0, 3, 512]],
    [3, [0, -1, 300]],
    [4, [0, 100, 512]],
  ] as const);
  cfg[field] = pick(values);
  return cfg;
}
op(1, () => {
  const bad = badKvConfig();
  if (chance(0.5)) call("bad", "pkv_kv_page_bytes", bad, out64());
  else call("bad", "pkv_kv_page_bytes", chance(0.5) ? null : kvConfig(SHAPES[0]!, 1, 4, 2, 2, 0), null);
});
// Layouts of any live pool (ours or wrapped).
op(1, () => {
  const pool = pick([...live.pool, ...wrappedPools.map((w) => w.h)]);
  if (pool === undefined) return;
  const layers = pools.get(pool)?.layers ?? wrappedPools.find((w) => w.h === pool)!.layers;
  const layout = new Uint8Array(64);
  call("valid", "pkv_kvpool_layout_get", asPtr(pool), int(0, layers - 1), layout);
  const r = int(0, 2);
  if (r === 0) call("bad", "pkv_kvpool_layout_get", asPtr(pool), pick([-1, layers, 2 ** 31 - 1]), layout);
  else if (r === 1) call("bad", "pkv_kvpool_layout_get", asPtr(pool), 0, null);
  else call("bad", "pkv_kvpool_layout_get", badHandle("pool"), 0, layout);
});

function wrapValidPool(): void {
  if (wrappedPools.length >= 3) return;
  const shape = pick(SHAPES);
  const [layers, pages, rows, width] = [int(1, 2), int(4, 8), int(2, 4), int(2, 4)];
  const layerBytes = pages * shape.heads * shape.pageSize * shape.dim * 2;
  const k = BigUint64Array.from({ length: layers }, () => BigInt(callerAllocation(layerBytes)));
  const v = BigUint64Array.from({ length: layers }, () => BigInt(callerAllocation(layerBytes)));
  const o = out64();
  call("valid", "pkv_kvpool_wrap", asPtr(rt), kvConfig(shape, layers, pages, rows, width, 0), k, v, o);
  const h = handleOut(o);
  const config = new ArrayBuffer(32);
  const maxBatch = int(1, 4);
  new Int32Array(config, 0, 7).set([shape.heads * shape.group, 0, 0, 0, 0, int(0, 2), maxBatch]);
  call("valid", "pkv_decode_engine_create_with", asPtr(rt), new Uint8Array(config), asPtr(h), null, o);
  wrappedPools.push({ h, engine: handleOut(o), maxBatch, shape, layers, pages, rows, width, k, v });
}
op(2, wrapValidPool);
op(3, () => {
  const shape = pick(SHAPES);
  const cfg = kvConfig(shape, 2, 4, 2, 2, 0);
  const layerBytes = 4 * shape.heads * shape.pageSize * shape.dim * 2;
  const addresses = () => BigUint64Array.from({ length: 2 }, () => BigInt(backingDevice));
  const k = BigUint64Array.of(BigInt(callerAllocation(layerBytes)), BigInt(callerAllocation(layerBytes)));
  const v = BigUint64Array.of(BigInt(callerAllocation(layerBytes)), BigInt(callerAllocation(layerBytes)));
  const r = int(0, 8);
  const o = out64();
  if (r === 0) call("bad", "pkv_kvpool_wrap", badHandle("runtime"), cfg, k, v, o);
  else if (r === 1)
    call("bad", "pkv_kvpool_wrap", asPtr(rt), kvConfig(shape, 2, 4, 2, 2, 1), k, v, o); // swap space
  else if (r === 2)
    call("bad", "pkv_kvpool_wrap", asPtr(rt), cfg, addresses(), v, o); // K layers overlap
  else if (r === 3)
    call("bad", "pkv_kvpool_wrap", asPtr(rt), cfg, k, BigUint64Array.of(v[0]!, k[1]!), o); // K and V share
  else if (r === 4) call("bad", "pkv_kvpool_wrap", asPtr(rt), cfg, BigUint64Array.of(k[0]! + 8n, k[1]!), v, o);
  else if (r === 5) call("bad", "pkv_kvpool_wrap", asPtr(rt), cfg, BigUint64Array.of(0n, k[1]!), v, o);
  else if (r === 6)
    call("bad", "pkv_kvpool_wrap", asPtr(rt), cfg, chance(0.5) ? null : k, chance(0.5) ? null : v, null);
  else if (r === 7) call("bad", "pkv_kvpool_wrap", asPtr(rt), badKvConfig(), k, v, o);
  else call("bad", "pkv_kvpool_wrap", asPtr(rt), cfg, BigUint64Array.of(2n ** 64n - 16n, k[1]!), v, o);
});

/** A valid FlashInfer-style table for wrapped pool `w`: batch requests of 1..width pages each. */
function callerTable(w: WrappedPool, batch: number) {
  const indptr = new Int32Array(batch + 1),
    lastPageLen = new Int32Array(batch),
    indices: number[] = [];
  for (let b = 0; b < batch; b++) {
    const count = int(1, w.width);
    for (let i = 0; i < count; i++) indices.push(int(0, w.pages - 1));
    indptr[b + 1] = indices.length;
    lastPageLen[b] = int(1, w.shape.pageSize);
  }
  return { indptr, indices: Int32Array.from(indices), lastPageLen };
}

op(4, () => {
  if (!wrappedPools.length) wrapValidPool();
  const w = pick(wrappedPools);
  const batch = int(1, Math.min(w.rows, w.maxBatch));
  const t = callerTable(w, batch);
  const info = new Int32Array(PLAN_INFO.size / 4);
  const hq = w.shape.heads * w.shape.group;
  if (chance(0.5))
    call(
      "valid",
      "pkv_decode_plan_paged",
      asPtr(w.engine),
      asPtr(w.h),
      batch,
      t.indptr,
      t.indices,
      t.lastPageLen,
      pick([-1, 0, 1, 2]),
      info,
    );
  else {
    const stride = w.width + int(0, 2),
      table = new Int32Array(batch * stride).fill(-1),
      lens = new Int32Array(batch);
    for (let b = 0; b < batch; b++) {
      table.set(t.indices.subarray(t.indptr[b]!, t.indptr[b + 1]!), b * stride);
      lens[b] = (t.indptr[b + 1]! - t.indptr[b]! - 1) * w.shape.pageSize + t.lastPageLen[b]!;
    }
    call(
      "valid",
      "pkv_decode_plan_block_table",
      asPtr(w.engine),
      asPtr(w.h),
      batch,
      table,
      stride,
      lens,
      pick([-1, 0, 1, 2]),
      info,
    );
  }
  const q = new Uint16Array(batch * hq * w.shape.dim).fill(0x3c00);
  call("valid", "pkv_decode_run", asPtr(w.engine), info[4]!, int(0, w.layers - 1), q, new Uint16Array(q.length), null);
});
op(5, () => {
  if (!wrappedPools.length) wrapValidPool();
  const w = pick(wrappedPools);
  const batch = int(1, w.rows);
  const t = callerTable(w, batch);
  const info = new Int32Array(PLAN_INFO.size / 4);
  const b = int(0, batch - 1);
  const paged = (
    indptr: Int32Array,
    indices: Int32Array,
    last: Int32Array,
    n = batch,
    pool = asPtr(w.h),
    engine = asPtr(w.engine),
  ) => call("bad", "pkv_decode_plan_paged", engine, pool, n, indptr, indices, last, -1, info);
  const ones = new Int32Array(batch).fill(1);
  const blockTable = (table: Int32Array, stride: number, lens: Int32Array) =>
    call("bad", "pkv_decode_plan_block_table", asPtr(w.engine), asPtr(w.h), batch, table, stride, lens, -1, info);
  const r = int(0, 11);
  if (r === 0)
    paged(
      t.indptr,
      t.indices.map((p, i) => (i === t.indptr[b]! ? pick([-1, w.pages, 2 ** 31 - 1]) : p)),
      t.lastPageLen,
    );
  else if (r === 1)
    paged(
      t.indptr,
      t.indices,
      t.lastPageLen.map((x, i) => (i === b ? pick([0, -1, w.shape.pageSize + 1]) : x)),
    );
  else if (r === 2)
    paged(
      t.indptr.map((x, i) => (i === 0 ? pick([1, -1]) : x)),
      t.indices,
      t.lastPageLen,
    );
  else if (r === 3)
    paged(
      t.indptr.map((x, i) => (i === b + 1 ? t.indptr[b]! : x)),
      t.indices,
      t.lastPageLen,
    ); // an empty request
  else if (r === 4) paged(t.indptr, t.indices, t.lastPageLen, pick([0, -1, w.rows + 1]));
  else if (r === 5)
    paged(t.indptr, t.indices, t.lastPageLen, batch, asPtr(pick(live.pool.length ? live.pool : [0]))); // a cache's pool
  else if (r === 6) paged(t.indptr, t.indices, t.lastPageLen, batch, badHandle("pool"));
  else if (r === 7) paged(t.indptr, t.indices, t.lastPageLen, batch, asPtr(w.h), badHandle("engine"));
  else if (r === 8)
    call(
      "bad",
      "pkv_decode_plan_paged",
      asPtr(w.engine),
      asPtr(w.h),
      batch,
      null,
      t.indices,
      chance(0.5) ? null : t.lastPageLen,
      -1,
      chance(0.5) ? null : info,
    );
  else if (r === 9) {
    // A request wider than the table, or a length its row cannot hold.
    const lens = Int32Array.from({ length: batch }, (_, i) =>
      i === b ? pick([0, -1, (w.width + 1) * w.shape.pageSize]) : 1,
    );
    blockTable(new Int32Array(batch * (w.width + 1)), w.width + 1, lens);
  } else if (r === 10) blockTable(new Int32Array(batch * w.width).fill(pick([-1, w.pages])), w.width, ones);
  else blockTable(new Int32Array(batch), pick([0, -1]), ones);
});
op(1, () => {
  const w = wrappedPools.length ? pick(wrappedPools) : undefined;
  if (!w) return;
  call("bad", "pkv_kvpool_copy_pages", asPtr(w.h), 1, Int32Array.of(0), Int32Array.of(1)); // the caller's pages
  call("bad", "pkv_kvpool_swap_out", asPtr(w.h), 1, Int32Array.of(0), Int32Array.of(0)); // no swap space
});
op(1, () => {
  const w = wrappedPools.length > 1 ? wrappedPools.splice(int(0, wrappedPools.length - 1), 1)[0] : undefined;
  if (!w) return;
  call("valid", "pkv_kvpool_destroy", asPtr(w.h));
  freed.pool.push(w.h);
  call("bad", "pkv_decode_run", asPtr(w.engine), 1, 0, new Uint16Array(1), new Uint16Array(1), null);
  call("valid", "pkv_decode_engine_destroy", asPtr(w.engine));
  freed.engine.push(w.engine);
});

// event queries: done (1) or pending (0), never waiting
op(2, () => {
  const r = int(0, 2);
  if (r === 0 && live.event.length) call("valid", "pkv_event_query", asPtr(pick(live.event)), new Int32Array(1));
  else if (r === 1) call("bad", "pkv_event_query", badHandle("event"), new Int32Array(1));
  else if (live.event.length) call("bad", "pkv_event_query", asPtr(pick(live.event)), null);
});

// the synthetic model: K/V into a pool at the rows' slots (rows from a scratch buffer: any values are
// valid, slots outside the pool are skipped), q and tokens into scratch buffers; the sentinel pool only
// in bad calls
let syntheticTable = 0,
  syntheticSmall = 0;
const SYNTHETIC_TABLE_BYTES = 131072;
function syntheticSetup() {
  if (!buffers.has(syntheticTable)) syntheticTable = createBuffer(false, SYNTHETIC_TABLE_BYTES, 0);
  const scratch = scratchPool();
  const pool = scratch && chance(0.8) ? scratch : sentinelPool;
  const p = pools.get(pool)!;
  const group = SHAPES.find((s) => s.heads === p.heads && s.dim === p.dim && s.pageSize === p.pageSize)!.group;
  const batch = int(1, 6);
  const scratchOf = (bytes: number) => {
    const fits = live.buffer.filter(
      (b) => b !== syntheticTable && !buffers.get(b)!.sentinel && buffers.get(b)!.bytes >= bytes,
    );
    return fits.length && chance(0.7) ? pick(fits) : createBuffer(false, bytes + 16 * int(0, 2));
  };
  const rows = scratchOf(batch * 16);
  let q = scratchOf(batch * p.heads * group * p.dim * 2);
  if (q === rows) q = createBuffer(false, batch * p.heads * group * p.dim * 2);
  const bad = pick([badHandle("buffer"), asPtr(foreignBuffer)]);
  const unaligned = pick([1, 2, 8, ...HUGE_U64]);
  if (!buffers.has(syntheticSmall)) syntheticSmall = createBuffer(false, 1024); // far smaller than a table
  const small = asPtr(syntheticSmall);
  return { pool, p, hq: p.heads * group, batch, rows, q, bad, small, unaligned, stream: asPtr(liveOr("stream")) };
}
op(3, () => {
  const x = syntheticSetup();
  const args: unknown[] = [
    asPtr(x.pool),
    asPtr(syntheticTable),
    int(0, x.p.layers - 1),
    x.hq,
    x.batch,
    asPtr(x.rows),
    0,
    asPtr(x.q),
    0,
    x.stream,
  ];
  const r = int(0, 10);
  if (r === 0) args[0] = badHandle("pool");
  else if (r === 1)
    args[1] = pick([x.bad, x.small]); // not a buffer, or one too small for the table
  else if (r === 2) args[2] = pick([-1, x.p.layers]);
  else if (r === 3)
    args[3] = pick([0, -1, x.p.heads * 17, x.p.heads > 1 ? x.p.heads * 2 + 1 : 0]); // group 17, not a multiple
  else if (r === 4) args[4] = pick([-1, 2 ** 31 - 1]);
  else if (r === 5) args[pick([5, 7])] = x.bad;
  else if (r === 6) args[pick([6, 8])] = x.unaligned;
  else if (r === 7)
    args[7] = asPtr(x.rows); // q over the rows
  else if (r === 8) args[9] = pick([badHandle("stream", false), asPtr(foreignStream)]);
  else if (x.pool !== sentinelPool) return void call("valid", "pkv_synthetic_forward", ...args);
  else args[8] = x.unaligned;
  call("bad", "pkv_synthetic_forward", ...args);
});
op(2, () => {
  const x = syntheticSetup();
  const args: unknown[] = [asPtr(x.pool), asPtr(syntheticTable), x.batch, asPtr(x.rows), 0, x.stream];
  const r = int(0, 6);
  if (r === 0) args[0] = badHandle("pool");
  else if (r === 1) args[1] = pick([x.bad, x.small]);
  else if (r === 2) args[2] = pick([-1, 2 ** 31 - 1]);
  else if (r === 3) args[3] = x.bad;
  else if (r === 4) args[4] = x.unaligned;
  else if (r === 5) args[5] = pick([badHandle("stream", false), asPtr(foreignStream)]);
  else if (x.pool !== sentinelPool) return void call("valid", "pkv_synthetic_prefill", ...args);
  else args[4] = x.unaligned;
  call("bad", "pkv_synthetic_prefill", ...args);
});
op(2, () => {
  const x = syntheticSetup();
  const args: unknown[] = [int(1, 2 ** 31 - 1), x.batch, asPtr(x.rows), 0, asPtr(x.q), 0, x.stream];
  const r = int(0, 7);
  if (r === 0) args[0] = pick([0, -1, -(2 ** 31)]);
  else if (r === 1) args[1] = pick([-1, 2 ** 31 - 1]);
  else if (r === 2) args[pick([2, 4])] = x.bad;
  else if (r === 3) args[pick([3, 5])] = pick([1, 2, ...HUGE_U64]);
  else if (r === 4)
    args[4] = asPtr(x.rows); // tokens over the rows
  else if (r === 5) args[6] = pick([badHandle("stream", false), asPtr(foreignStream)]);
  else return void call("valid", "pkv_synthetic_sample", ...args);
  call("bad", "pkv_synthetic_sample", ...args);
});
// ---- several devices (sharded.cpp) ----------------------------------------------------------------

op(1, () => {
  if (chance(0.5)) call("valid", "pkv_runtime_enable_peer_access", asPtr(rt), asPtr(pick([rt, foreign])));
  else call("bad", "pkv_runtime_enable_peer_access", badHandle("runtime", true), asPtr(rt));
});
op(2, () => {
  // Rows between buffers of any two runtimes: one argument out of its range, or a valid copy.
  const dst = pick(live.buffer),
    src = pick([...live.buffer, foreignBuffer]),
    d = buffers.get(dst)!,
    sb = buffers.get(src)?.bytes ?? 4096;
  const rows = int(1, 4),
    row = int(1, Math.max(1, Math.floor(Math.min(d.bytes, sb) / rows)));
  const r = int(0, 5);
  if (r === 0)
    call("bad", "pkv_buffer_copy_rows", badHandle("buffer", true), 0, row, asPtr(src), 0, row, row, rows, null);
  else if (r === 1) call("bad", "pkv_buffer_copy_rows", asPtr(dst), 0, row - 1, asPtr(src), 0, row, row, rows, null);
  else if (r === 2)
    call(
      "bad",
      "pkv_buffer_copy_rows",
      asPtr(dst),
      pick([d.bytes, ...HUGE_U64]),
      row,
      asPtr(src),
      0,
      row,
      row,
      rows,
      null,
    );
  else if (r === 3) call("bad", "pkv_buffer_copy_rows", asPtr(dst), 0, row, asPtr(dst), 0, row, row, rows, null);
  else if (r === 4)
    call("bad", "pkv_buffer_copy_rows", asPtr(dst), 0, row, asPtr(src), 0, row, row, rows, asPtr(foreignStream));
  else if (!d.sentinel && dst !== src)
    call("valid", "pkv_buffer_copy_rows", asPtr(dst), 0, row, asPtr(src), 0, row, row, rows, null);
});
op(2, () => {
  // One plan, two engines: dst takes a copy of src's plan and runs it over its own pool of the same table.
  const src = runnablePlan();
  if (src === undefined) return;
  const e = engines.get(src)!,
    plan = e.plan!,
    p = pools.get(plan.pool)!;
  const info = new Int32Array(PLAN_INFO.size / 4);
  const r = int(0, 4);
  if (r === 0) call("bad", "pkv_decode_plan_copy", asPtr(src), asPtr(src), asPtr(plan.pool), info);
  else if (r === 1) call("bad", "pkv_decode_plan_copy", asPtr(src), badHandle("engine", true), asPtr(plan.pool), info);
  else if (r === 2) call("bad", "pkv_decode_plan_copy", badHandle("engine", true), asPtr(src), asPtr(plan.pool), info);
  else if (r === 3) call("bad", "pkv_decode_plan_copy", asPtr(src), asPtr(src), asPtr(plan.pool), null);
  else {
    const settings = new Int32Array(8);
    call("valid", "pkv_decode_engine_settings", asPtr(src), settings);
    const config = new ArrayBuffer(32);
    new Int32Array(config, 0, 7).set([e.hq, e.heads, e.dim, e.pageSize, 0, 0, e.maxBatch]);
    const o = out64();
    call("valid", "pkv_decode_engine_create_with", asPtr(rt), new Uint8Array(config), null, settings, o);
    const dst = handleOut(o);
    live.engine.push(dst);
    engines.set(dst, { hq: e.hq, heads: e.heads, dim: e.dim, pageSize: e.pageSize, maxBatch: e.maxBatch });
    const pool = createPool(rt, p.cfg);
    if (plan.multiquery) return void call("bad", "pkv_decode_plan_copy", asPtr(src), asPtr(dst), asPtr(pool), info);
    call("valid", "pkv_decode_plan_copy", asPtr(src), asPtr(dst), asPtr(pool), info);
    const q = plan.q;
    engines.get(dst)!.plan = {
      id: info[4]!,
      pool,
      batch: plan.batch,
      q,
      expected: new Map(),
      version: pools.get(pool)!.version,
    };
    validRun(dst);
  }
});

// ---- rounds -----------------------------------------------------------------------------------------

let sentinelPool = 0,
  sentinelEngine = 0,
  sentinelBuffer = 0;
const SENTINEL_BYTES = 1024;
const sentinelPattern = Uint8Array.from({ length: SENTINEL_BYTES }, (_, i) => (i * 29 + 11) & 0xff);

function startRound(): void {
  const o = out64();
  call("valid", "pkv_runtime_create", BACKEND, 0, o);
  rt = handleOut(o);
  live.runtime.push(rt);
  call("valid", "pkv_runtime_create", BACKEND, 0, o);
  foreign = handleOut(o);
  call("valid", "pkv_buffer_alloc", asPtr(foreign), 0, 4096, o);
  foreignBuffer = handleOut(o);
  call("valid", "pkv_stream_create", asPtr(foreign), o);
  foreignStream = handleOut(o);
  call("valid", "pkv_event_create", asPtr(foreign), o);
  foreignEvent = handleOut(o);
  call("valid", "pkv_event_record", asPtr(foreignEvent), null);
  foreignPool = createPool(foreign, kvConfig(SHAPES[0]!, 2, 8, 2, 4, 0));
  sentinelBuffer = createBuffer(true, SENTINEL_BYTES, 1);
  call("valid", "pkv_buffer_write", asPtr(sentinelBuffer), 0, sentinelPattern, SENTINEL_BYTES);
  createBuffer();
  sentinelPool = createPool(rt, kvConfig(SHAPES[0]!, 2, 32, 4, 8, 8), true);
  const p = pools.get(sentinelPool)!;
  for (let layer = 0; layer < p.layers; layer++) {
    const slots = allSlots(p);
    call(
      "valid",
      "pkv_kvpool_write",
      asPtr(sentinelPool),
      layer,
      slots.length,
      slots,
      tokenData(p, layer, slots, 0),
      tokenData(p, layer, slots, 1),
    );
  }
  sentinelEngine = createEngine(SHAPES[0]!, 4);
  validPlan(sentinelEngine, sentinelPool);
  backingDevice = callerAllocation(BACKING_BYTES, 0);
  backingPinned = callerAllocation(BACKING_BYTES, 1);
}

function endRound(): void {
  // Nothing a failed call did may show: the sentinel pool and buffer hold what they were given.
  const p = pools.get(sentinelPool)!,
    slots = allSlots(p);
  for (let layer = 0; layer < p.layers; layer++) {
    const k = new Uint16Array(slots.length * p.heads * p.dim),
      v = new Uint16Array(k.length);
    call("valid", "pkv_kvpool_read", asPtr(sentinelPool), layer, slots.length, slots, k, v);
    const wantK = tokenData(p, layer, slots, 0),
      wantV = tokenData(p, layer, slots, 1);
    for (let i = 0; i < k.length; i++)
      if (k[i] !== wantK[i] || v[i] !== wantV[i]) violation(`sentinel pool layer ${layer} element ${i} changed`);
  }
  const back = new Uint8Array(SENTINEL_BYTES);
  call("valid", "pkv_buffer_read", asPtr(sentinelBuffer), 0, back, SENTINEL_BYTES);
  for (let i = 0; i < SENTINEL_BYTES; i++)
    if (back[i] !== sentinelPattern[i]) violation(`sentinel buffer byte ${i} changed`);
  // Then the runtimes go, and every handle they made is a freed one: each kind is tried once more.
  call("valid", "pkv_runtime_destroy", asPtr(rt));
  call("valid", "pkv_runtime_destroy", asPtr(foreign));
  for (const kind of KINDS) for (const h of live[kind].splice(0)) freed[kind].push(h);
  freed.runtime.push(foreign);
  freed.buffer.push(foreignBuffer);
  freed.stream.push(foreignStream);
  freed.event.push(foreignEvent);
  freed.pool.push(foreignPool);
  for (const map of [buffers, pools, engines, recorded]) map.clear();
  for (const w of wrappedPools.splice(0)) {
    freed.pool.push(w.h);
    freed.engine.push(w.engine);
  }
  call("bad", "pkv_runtime_synchronize", asPtr(rt));
  if (freed.buffer.length) call("bad", "pkv_buffer_write", asPtr(pick(freed.buffer)), 0, new Uint8Array(1), 1);
  if (freed.pool.length) call("bad", "pkv_kvpool_write", asPtr(pick(freed.pool)), 0, 0, null, null, null);
  if (freed.engine.length)
    call("bad", "pkv_decode_run", asPtr(pick(freed.engine)), 1, 0, new Uint16Array(1), new Uint16Array(1), null);
}

const started = performance.now();
while (callIndex < CALLS) {
  startRound();
  const end = Math.min(CALLS, callIndex + ROUND_CALLS);
  while (callIndex < end) pick(ops)();
  endRound();
}
if (lastFd >= 0) closeSync(lastFd);
const ms = performance.now() - started;
const entryPoints = [...byEntry.keys()].sort();
console.log(
  JSON.stringify({ seed: SEED, backend: backendName, calls: callIndex, ...counts, ms: Math.round(ms), entryPoints }),
);
