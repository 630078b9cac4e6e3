// The pipeline a task runs: kDecodeStages stages of K and V, tiles issued stages - 1 ahead, page ids
// fetched one tile ahead of their issue. `compute(tile, ks, vs, valid)` sees each tile once, between
// barriers. Which tile a pipeline slot loads is the TileSchedule's: in order for a static task, claimed
// from the (row, head)'s cursor for a claiming split (PlanTask).
#pragma once
#include "../core/plan_image.h"
#include "decode_launch.h"
#include "decode_vec.cuh"

namespace pkv {

// Tiles of one task's pipeline slots. A claiming split loads its own first tiles, then tiles that
// thread 0 claims one slot at a time, S + 2 slots ahead of their compute: a claim's round trip has a
// whole iteration (a tile's worth of streaming) to return before it is published at the block barrier
// that ends the next iteration.
struct TileSchedule {
  static constexpr int kAhead = kDecodeStages + 2;  // claims run this many slots ahead of the compute
  static constexpr int kRing = kAhead + 1;          // slots alive: computing i .. claiming i + kAhead
  int own_first, own_count;  // slots [0, own_count) load tiles own_first + slot
  int ntiles;                // tiles of the loader's range: a tile at or past it is none
  int shared_first;          // claim c is tile shared_first + c
  int *cursor;               // null: a static task (no claims)
  int *ring;                 // shared memory [kRing]: the tiles of claimed slots

  static __device__ __forceinline__ TileSchedule of_range(int ntiles) { return {0, ntiles, ntiles, 0, nullptr, nullptr}; }

  // -1 past the task's last tile (every thread agrees: claims are read after a barrier).
  __device__ __forceinline__ int tile(int slot) const {
    const int t = slot < own_count ? own_first + slot : cursor ? ring[slot % kRing] : ntiles;
    return t < ntiles ? t : -1;
  }
  // Thread 0: claims the slots [from, to) past the task's own (one atomic) and publishes them.
  __device__ __forceinline__ void claim_now(int from, int to) const {
    from = max(from, own_count);
    if (!cursor || from >= to) return;
    const int c = atomicAdd(cursor, to - from);
    for (int s = from; s < to; s++) ring[s % kRing] = shared_first + c + (s - from);
  }
  // Thread 0: claims `slot` (if past the task's own); publish() stores it an iteration later.
  __device__ __forceinline__ int claim(int slot) const { return cursor && slot >= own_count ? atomicAdd(cursor, 1) : -1; }
  __device__ __forceinline__ void publish(int slot, int c) const {
    if (c >= 0) ring[slot % kRing] = shared_first + c;
  }
};

// A task's token range for its loader, and its schedule: a static task's own range, or for a claiming
// split (PlanTask, claim_tiles in plan_image.h) the whole row, its own first tiles and the (row, head)'s
// cursor. kTile is the body's tile, which the planner used as the plan's claim_tile.
struct TaskTiles {
  int tok_begin, tok_end;
  TileSchedule sched;
};
template <int kTile>
__device__ __forceinline__ TaskTiles task_tiles(const DecodeParams &p, const PlanTask &task, const PlanRow &row, int head,
                                                int *ring) {
  if (!task_claims(plan_header(p.plan).claim_tile, row))
    return {task.tok_begin, task.tok_end, TileSchedule::of_range((task.tok_end - task.tok_begin + kTile - 1) / kTile)};
  const ClaimTiles c = claim_tiles(task, row, kTile);
  return {0, row.seq_len,
          {c.own_first, c.own_count, c.ntiles, c.shared_first, p.tile_cursors + (int64_t)task.row * p.num_kv_heads + head, ring}};
}

// How a pipeline's stages are filled and awaited (stream_tiles): 16-byte cp.async into commit groups
// (TileLoader, every architecture), or Hopper bulk copies completing on a barrier per stage
// (BulkTileLoader, sm_90+), which thread 0 arms with the stage's byte count (its arrival; a loader may
// add others: Loader::kArrivals) and every thread waits on, so the compute needs no block barrier
// before it, only the one after it.
template <class Loader, int kStageElems, typename T>
struct CpAsyncStages {
  const Loader &loader;
  T *smem;
  // Claims were made by thread 0: publish them.
  __device__ __forceinline__ void begin(bool claiming) const {
    if (claiming) __syncthreads();
  }
  // Every slot commits a group, with or without a tile, so that wait() counts groups per slot.
  __device__ __forceinline__ void issue(int slot, int tile, const int32_t (&pages)[Loader::kPasses]) const {
    T *stage = smem + (slot % kDecodeStages) * kStageElems;
    if (tile >= 0) loader.issue(tile, pages, stage, stage + kStageElems / 2);
    cp_async_commit();
  }
  __device__ __forceinline__ void wait(int) const {
    cp_async_wait<kDecodeStages - 1>();
    __syncthreads();
  }
  __device__ __forceinline__ void end() const { cp_async_wait<0>(); }
};

template <class Loader, int kStageElems, typename T>
struct BulkStages {
  const Loader &loader;
  T *smem;
  uint64_t *bars;  // [kDecodeStages] in shared memory
  __device__ __forceinline__ void begin(bool) const {
    if (threadIdx.x == 0)
#pragma unroll
      for (int s = 0; s < kDecodeStages; s++) mbar_init(&bars[s], Loader::kArrivals);
    // Thread 0's inits, and every thread's ordinary writes into this memory (the previous task's
    // epilogue), ordered before the copy engine's writes; the claims published.
    fence_async_shared();
    __syncthreads();
  }
  __device__ __forceinline__ void issue(int slot, int tile, const int32_t (&pages)[Loader::kPasses]) const {
    if (tile < 0) return;
    const int s = slot % kDecodeStages;
    T *stage = smem + s * kStageElems;
    if (threadIdx.x == 0) mbar_arrive_expect_tx(&bars[s], Loader::kStageBytes);
    loader.issue(tile, pages, stage, stage + kStageElems / 2, &bars[s]);
  }
  __device__ __forceinline__ void wait(int i) const {
    mbar_wait_parity(&bars[i % kDecodeStages], (unsigned)(i / kDecodeStages) & 1u);
  }
  // Every phase has completed and every thread has passed its wait (the last iteration's barrier).
  __device__ __forceinline__ void end() const {
    if (threadIdx.x == 0)
#pragma unroll
      for (int s = 0; s < kDecodeStages; s++) mbar_inval(&bars[s]);
  }
};

// The pipeline a task runs over its Stages; returns the number of tiles computed.
template <class Stages, class Loader, int kStageElems, typename T, class Compute>
__device__ __forceinline__ int stream_stages(const Stages &stages, const Loader &loader, const TileSchedule &sched, T *smem,
                                             Compute compute) {
  constexpr int S = kDecodeStages;
  int pending = -1;  // thread 0: the claim of slot i + S + 1, published at the end of iteration i
  if (threadIdx.x == 0) sched.claim_now(0, S + 1), pending = sched.claim(S + 1);
  stages.begin(sched.cursor != nullptr);

  // Prologue: all page ids first (independent loads in flight together), then the copies.
  int32_t pages[S - 1][Loader::kPasses];
#pragma unroll
  for (int s = 0; s < S - 1; s++)
    if (sched.tile(s) >= 0) loader.fetch_pages(sched.tile(s), pages[s]);
#pragma unroll
  for (int s = 0; s < S - 1; s++) stages.issue(s, sched.tile(s), pages[s]);
  int32_t next_pages[Loader::kPasses];
  if (sched.tile(S - 1) >= 0) loader.fetch_pages(sched.tile(S - 1), next_pages);

  int i = 0;
  for (;; i++) {
    const int tile = sched.tile(i);
    if (tile < 0) break;
    const int next = i + S - 1;
    const int claimed = threadIdx.x == 0 ? sched.claim(i + S + 2) : -1;
    stages.issue(next, sched.tile(next), next_pages);
    if (sched.tile(next + 1) >= 0) loader.fetch_pages(sched.tile(next + 1), next_pages);  // in flight while this tile computes
    stages.wait(i);
    const int valid = min(Loader::kTileTokens, loader.tok_end - (loader.tok_begin + tile * Loader::kTileTokens));
    const T *stage = smem + (i % S) * kStageElems;
    compute(tile, stage, stage + kStageElems / 2, valid);
    if (threadIdx.x == 0) sched.publish(i + S + 1, pending), pending = claimed;
    __syncthreads();  // the stage is overwritten by the next iteration's issue
  }
  stages.end();
  return i;
}

template <class Loader, int kStageElems, typename T, class Compute>
__device__ __forceinline__ int stream_tiles(const Loader &loader, const TileSchedule &sched, T *smem, Compute compute) {
  return stream_stages<CpAsyncStages<Loader, kStageElems, T>, Loader, kStageElems>(
      CpAsyncStages<Loader, kStageElems, T>{loader, smem}, loader, sched, smem, compute);
}

template <class Loader, int kStageElems, typename T, class Compute>
__device__ __forceinline__ int stream_tiles_bulk(const Loader &loader, const TileSchedule &sched, T *smem, Compute compute) {
  __shared__ uint64_t bars[kDecodeStages];
  return stream_stages<BulkStages<Loader, kStageElems, T>, Loader, kStageElems>(
      BulkStages<Loader, kStageElems, T>{loader, smem, bars}, loader, sched, smem, compute);
}

// The pipeline of a task with its loader's stage policy; returns the number of tiles computed.
template <class Loader, typename T, class Compute>
__device__ __forceinline__ int stream_task_tiles(const Loader &loader, const TileSchedule &sched, T *smem, Compute compute) {
  if constexpr (Loader::kBulk) return stream_tiles_bulk<Loader, Loader::kStageElems>(loader, sched, smem, compute);
  else return stream_tiles<Loader, Loader::kStageElems>(loader, sched, smem, compute);
}

}  // namespace pkv
