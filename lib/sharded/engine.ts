// A decode engine sharded by KV heads: one DecodeEngine per device, each over its shard's pool and its
// share of the query heads. A step is planned once, on the host, by shard 0's engine; the other engines
// get a copy of that plan image (pkv_decode_plan_copy: no second planner run, one upload per device).
// Each shard then runs its heads on its own device's stream; outputs stay per device in the caller's
// tensor-parallel layout unless a gather onto one device is asked for.
import { NativeBuffer, streamHandle } from "../buffers";
import type { DecodeEngine, Plan, PlanKernel } from "../engine";
import { type CreateDecodeEngineOptions, resolveEngineOptions } from "../engine-options";
import { InvalidArgumentError, Status, StalePlanError } from "../errors";
import { check } from "../ffi/call";
import { PLAN_INFO } from "../ffi/layouts";
import { native } from "../ffi/loader";
import type { Sequence } from "../kvcache";
import type { Stream } from "../streams";
import type { DecodePolicy } from "../types";
import { checkCount, checkOptions, show } from "../validate";
import { ShardedKVCache } from "./cache";
import { type HeadLayout, copyHeads, layoutHeads, queryHeadsPerShard } from "./heads";
import type { ShardedContext } from "./context";

/** As createDecodeEngine's options; `cache` (a ShardedKVCache) or numKvHeads give the model's KV heads. */
export type CreateShardedEngineOptions = CreateDecodeEngineOptions;

/** One step's plan on every shard: shard 0's Plan and the plan ids its copies got on the other engines. */
export class ShardedPlan {
  constructor(
    readonly engine: ShardedDecodeEngine,
    readonly leader: Plan,
    readonly ids: Int32Array,
  ) {}
  get kernel(): PlanKernel {
    return this.leader.kernel;
  }
  get batch(): number {
    return this.leader.batch;
  }
  get totalTokens(): number {
    return this.leader.totalTokens;
  }
  /** K and V bytes one layer reads on each device. */
  get kvBytesPerShard(): number {
    return this.leader.kvBytes;
  }
}

type Io = Uint16Array | NativeBuffer;

export interface ShardedRunOptions {
  /** Device runs: a stream per shard (each of that shard's runtime; default each runtime's own stream). */
  streams?: readonly (Stream | undefined)[];
  /**
   * Device runs: after the shards' runs, their outputs gathered into `into` ([batch][numQoHeads][headDim],
   * a buffer of any shard's runtime, at byte `offset`), queued on that runtime's own stream after every
   * shard's run (peer copies; needs the runs on the runtimes' own streams).
   */
  gather?: { into: NativeBuffer; offset?: number };
  /**
   * Each softmax's natural-log denominator: with whole host arrays a Float32Array [batch][numQoHeads];
   * with per-shard q and out one part per shard, [batch][qoHeadsPerShard] (Float32Arrays with host
   * arrays, buffers of the shard's runtime with buffers).
   */
  lse?: Float32Array | readonly (Float32Array | NativeBuffer)[];
}

export class ShardedDecodeEngine implements Disposable {
  readonly runtime: ShardedContext;
  readonly heads: HeadLayout;
  /** One engine per shard; shard 0's plans each step. */
  readonly engines: readonly DecodeEngine[];
  readonly numQoHeads: number;
  /** Query heads each shard runs (device s: heads s*q .. s*q+q-1). */
  readonly qoHeadsPerShard: number;
  readonly headDim: number;
  readonly #info = PLAN_INFO.alloc();
  readonly #readInfo = PLAN_INFO.decoder(this.#info);
  #latest: ShardedPlan | null = null;

  constructor(runtime: ShardedContext, options: CreateShardedEngineOptions) {
    const op = "createDecodeEngine";
    const resolved = resolveEngineOptions(options);
    this.runtime = runtime;
    this.heads = layoutHeads(op, resolved.numKvHeads, runtime.size);
    this.qoHeadsPerShard = queryHeadsPerShard(op, this.heads, resolved.numQoHeads);
    this.numQoHeads = resolved.numQoHeads;
    this.headDim = resolved.headDim;
    const engines: DecodeEngine[] = [];
    try {
      for (const rt of runtime.runtimes)
        engines.push(
          rt.createDecodeEngine({
            ...resolved,
            numQoHeads: this.qoHeadsPerShard,
            numKvHeads: this.heads.kvHeadsPerShard,
            // Shard 0's plan is copied to the others, and a shared-prefix section is not copied.
            settings: { ...resolved.settings, sharedPrefix: "off" },
          }),
        );
    } catch (error) {
      for (const engine of engines) engine.dispose();
      throw error;
    }
    this.engines = engines;
  }

  get shards(): number {
    return this.engines.length;
  }

  /**
   * Plans the step once (shard 0) and installs that plan on every other shard. Never waits for a GPU.
   * Rows of several query tokens (qLens) are planned by shard 0 and refused by the copy (UnsupportedError).
   */
  plan(
    cache: ShardedKVCache,
    sequences: readonly Sequence[],
    options?: { policy?: DecodePolicy; qLens?: ArrayLike<number> },
  ): ShardedPlan {
    if (!(cache instanceof ShardedKVCache) || cache.runtime !== this.runtime)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `plan: cache ${show(cache)} is not a sharded cache of this runtime`,
      );
    const h = cache.heads;
    if (h.numKvHeads !== this.heads.numKvHeads)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `plan: the cache holds ${h.numKvHeads} KV heads, the engine ${this.heads.numKvHeads}`,
      );
    const leader = this.engines[0]!.plan(cache, sequences, options);
    const ids = new Int32Array(this.shards);
    ids[0] = leader.id;
    this.#latest = null; // until every shard holds the plan
    for (let s = 1; s < this.shards; s++) {
      check(
        native().pkv_decode_plan_copy(leader.engine.handle, this.engines[s]!.handle, cache.poolHandleOf(s), this.#info),
        "pkv_decode_plan_copy",
      );
      ids[s] = this.#readInfo().planId;
    }
    const plan = new ShardedPlan(this, leader, ids);
    this.#latest = plan;
    return plan;
  }

  /**
   * Decode attention of one layer on every shard. q and out: per shard, [batch][qoHeadsPerShard][headDim]
   * (host arrays, or buffers of that shard's runtime); or whole [batch][numQoHeads][headDim] host arrays,
   * split and joined on the host.
   */
  run(
    plan: ShardedPlan,
    layer: number,
    q: Io | readonly Io[],
    out: Io | readonly Io[],
    options?: ShardedRunOptions,
  ): void {
    if (plan !== this.#latest)
      throw plan instanceof ShardedPlan && plan.engine === this
        ? new StalePlanError(
            Status.STALE_PLAN,
            "run: a newer plan of this engine replaced the plan; plan the step again",
          )
        : new InvalidArgumentError(Status.INVALID_ARGUMENT, `run: ${show(plan)} is not a plan of this engine`);
    const { streams, gather, lse } = checkOptions("run", options);
    if (q instanceof Uint16Array && out instanceof Uint16Array) {
      if (streams !== undefined || gather !== undefined)
        throw new InvalidArgumentError(Status.INVALID_ARGUMENT, "run: streams and gather apply to device buffers only");
      if (lse !== undefined && !(lse instanceof Float32Array && lse.length === plan.batch * this.numQoHeads))
        throw new InvalidArgumentError(
          Status.INVALID_ARGUMENT,
          `run: lse must be a Float32Array of ${plan.batch * this.numQoHeads} with whole q and out`,
        );
      this.#runWhole(plan, layer, q, out, lse);
      return;
    }
    const qs = this.#perShard("q", q, plan.batch);
    const outs = this.#perShard("out", out, plan.batch);
    const lses = lse === undefined ? undefined : this.#perShardLse(lse, qs[0] instanceof NativeBuffer, plan.batch);
    if (streams !== undefined && (!Array.isArray(streams) || streams.length !== this.shards))
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `run: streams must be an array of ${this.shards}`);
    if (gather !== undefined && streams !== undefined)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        "run: gather orders its copies after each runtime's own stream; run on those (no streams) to gather",
      );
    const into = gather === undefined ? undefined : this.#gatherTarget(gather, outs, plan.batch);
    // Shard 0 first: its run checks that the plan still describes its batch before any shard runs.
    this.engines[0]!.run(plan.leader, layer, qs[0]!, outs[0]!, lses?.[0], { stream: streams?.[0] });
    for (let s = 1; s < this.shards; s++) this.#runShard(plan, s, layer, qs[s]!, outs[s]!, lses?.[s], streams?.[s]);
    if (into) this.#gather(plan.batch, outs as NativeBuffer[], into.buffer, into.offset);
  }

  dispose(): void {
    for (let s = this.engines.length - 1; s >= 0; s--) this.engines[s]!.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }

  // ---- helpers ---------------------------------------------------------------------------------

  #runWhole(plan: ShardedPlan, layer: number, q: Uint16Array, out: Uint16Array, lse: Float32Array | undefined): void {
    const d = this.headDim,
      per = this.qoHeadsPerShard,
      heads = this.numQoHeads,
      batch = plan.batch;
    for (const [name, array] of [
      ["q", q],
      ["out", out],
    ] as const)
      if (array.length !== batch * heads * d)
        throw new InvalidArgumentError(
          Status.INVALID_ARGUMENT,
          `run: ${name} holds ${array.length} elements; [${batch}][${heads}][${d}] needs ${batch * heads * d}`,
        );
    const qs: Uint16Array[] = [];
    const outs: Uint16Array[] = [];
    const lses = lse ? Array.from({ length: this.shards }, () => new Float32Array(batch * per)) : undefined;
    for (let s = 0; s < this.shards; s++) {
      const part = new Uint16Array(batch * per * d);
      copyHeads(q, part, batch, heads, per, d, (l) => s * per + l, true);
      qs.push(part);
      outs.push(new Uint16Array(batch * per * d));
    }
    this.engines[0]!.run(plan.leader, layer, qs[0]!, outs[0]!, lses?.[0]);
    for (let s = 1; s < this.shards; s++) this.#runShard(plan, s, layer, qs[s]!, outs[s]!, lses?.[s], undefined);
    for (let s = 0; s < this.shards; s++) {
      copyHeads(out, outs[s]!, batch, heads, per, d, (l) => s * per + l, false);
      if (lse && lses)
        for (let b = 0; b < batch; b++) lse.set(lses[s]!.subarray(b * per, (b + 1) * per), b * heads + s * per);
    }
  }

  /** Per-shard lse parts: Float32Arrays with host q and out, buffers with buffers, each [batch][qoHeadsPerShard]. */
  #perShardLse(lse: Float32Array | readonly (Float32Array | NativeBuffer)[], device: boolean, batch: number) {
    const count = batch * this.qoHeadsPerShard;
    const fits = (part: unknown) =>
      device
        ? part instanceof NativeBuffer && part.bytes >= count * 4
        : part instanceof Float32Array && part.length === count;
    if (!Array.isArray(lse) || lse.length !== this.shards || !lse.every(fits))
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `run: lse must be ${this.shards} per-shard ${device ? `buffers of at least ${count * 4} bytes` : `Float32Arrays of ${count}`}`,
      );
    return lse as readonly (Float32Array | NativeBuffer)[];
  }

  #runShard(
    plan: ShardedPlan,
    s: number,
    layer: number,
    q: Io,
    out: Io,
    lse: Float32Array | NativeBuffer | undefined,
    stream: Stream | undefined,
  ): void {
    const engine = this.engines[s]!.handle;
    if (q instanceof NativeBuffer && out instanceof NativeBuffer)
      check(
        native().pkv_decode_run_device(
          engine,
          plan.ids[s]!,
          layer,
          q.handle,
          0,
          out.handle,
          0,
          lse instanceof NativeBuffer ? lse.handle : null,
          0,
          streamHandle("run", stream),
        ),
        "pkv_decode_run_device",
      );
    else
      check(
        native().pkv_decode_run(
          engine,
          plan.ids[s]!,
          layer,
          q as Uint16Array,
          out as Uint16Array,
          (lse as Float32Array | undefined) ?? null,
        ),
        "pkv_decode_run",
      );
  }

  /** Per-shard q or out: all host arrays or all buffers, each of its shard's size (and runtime, where known). */
  #perShard(name: string, data: Io | readonly Io[], batch: number): readonly Io[] {
    if (!Array.isArray(data) || data.length !== this.shards)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `run: ${name} must be whole host arrays or an array of ${this.shards} per-shard parts`,
      );
    const elements = batch * this.qoHeadsPerShard * this.headDim;
    const device = data[0] instanceof NativeBuffer;
    data.forEach((part, s) => {
      const fits = device
        ? part instanceof NativeBuffer && part.bytes >= elements * 2
        : part instanceof Uint16Array && part.length === elements;
      if (!fits)
        throw new InvalidArgumentError(
          Status.INVALID_ARGUMENT,
          `run: ${name}[${s}] must be ${device ? `a buffer of at least ${elements * 2} bytes` : `a Uint16Array of ${elements}`} ([${batch}][${this.qoHeadsPerShard}][${this.headDim}]), like ${name}[0]`,
        );
      const home = this.runtime.shardOf(part);
      if (home !== undefined && home !== s)
        throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `run: ${name}[${s}] lives on shard ${home}, not ${s}`);
    });
    return data;
  }

  #gatherTarget(gather: { into: NativeBuffer; offset?: number }, outs: readonly Io[], batch: number) {
    if (!(outs[0] instanceof NativeBuffer))
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, "run: gather needs the shards' outputs in buffers");
    const { into, offset = 0 } = checkOptions("run gather", gather);
    if (!(into instanceof NativeBuffer))
      throw new InvalidArgumentError(Status.INVALID_ARGUMENT, `run: gather.into ${show(into)} is not a buffer`);
    const bytes = batch * this.numQoHeads * this.headDim * 2;
    checkCount("run", "gather.offset", offset);
    if (offset + bytes > into.bytes)
      throw new InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        `run: gather.into holds ${into.bytes} bytes, the output needs ${bytes} at offset ${offset}`,
      );
    return { buffer: into, offset };
  }

  /** Each shard's [batch][q][d] block into its columns of the whole [batch][numQoHeads][d] output. */
  #gather(batch: number, outs: NativeBuffer[], into: NativeBuffer, offset: number): void {
    const rowBytes = this.qoHeadsPerShard * this.headDim * 2;
    const pitch = this.numQoHeads * this.headDim * 2;
    for (let s = 0; s < this.shards; s++)
      check(
        native().pkv_buffer_copy_rows(
          into.handle,
          offset + s * rowBytes,
          pitch,
          outs[s]!.handle,
          0,
          rowBytes,
          rowBytes,
          batch,
          null,
        ),
        "pkv_buffer_copy_rows",
      );
  }
}
