// The pipeline a task runs: kDecodeStages stages of K and V, tiles issued stages - 1 ahead, page ids
// fetched one tile ahead of their issue. `compute(tile, ks, vs, valid)` sees each tile once, between
// barriers. Which tile a pipeline slot loads is the TileSchedule's: in order for a static task, claimed
// from the (row, head)'s cursor for a claiming split (PlanTask).
#pragma once
#include "../core/plan.h"
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
// split (PlanTask) the whole row, its own first tiles and the (row, head)'s cursor. kTile is the
// body's tile, which the planner used as the plan's claim_tile.
struct TaskTiles {
  int tok_begin, tok_end;
  TileSchedule sched;
};
template <int kTile>
__device__ __forceinline__ TaskTiles task_tiles(const DecodeParams &p, const PlanTask &task, const PlanRow &row, int head,
                                                int *ring) {
  if (static_cast<const PlanHeader *>(p.plan)->claim_tile == 0 || row.num_splits == 1)
    return {task.tok_begin, task.tok_end, TileSchedule::of_range((task.tok_end - task.tok_begin + kTile - 1) / kTile)};
  const int ntiles = (row.seq_len + kTile - 1) / kTile, first = task.tok_begin / kTile, shared = task.tok_end / kTile;
  const int own = min(kClaimFirstTiles, max(0, min(shared, ntiles) - first));
  return {0, row.seq_len, {first, own, ntiles, shared, p.tile_cursors + (int64_t)task.row * p.num_kv_heads + head, ring}};
}

// Both return the number of tiles computed.
template <class Loader, int kStageElems, typename T, class Compute>
__device__ __forceinline__ int stream_tiles(const Loader &loader, const TileSchedule &sched, T *smem, Compute compute) {
  constexpr int S = kDecodeStages, kTileElems = kStageElems / 2;
  auto k_stage = [&](int s) { return smem + s * kStageElems; };
  auto v_stage = [&](int s) { return smem + s * kStageElems + kTileElems; };
  int pending = -1;  // thread 0: the claim of slot i + S + 1, published at the end of iteration i
  if (sched.cursor) {
    if (threadIdx.x == 0) sched.claim_now(0, S + 1), pending = sched.claim(S + 1);
    __syncthreads();
  }

  // Prologue: all page ids first (independent loads in flight together), then the copies.
  int32_t pages[S - 1][Loader::kPasses];
#pragma unroll
  for (int s = 0; s < S - 1; s++)
    if (sched.tile(s) >= 0) loader.fetch_pages(sched.tile(s), pages[s]);
#pragma unroll
  for (int s = 0; s < S - 1; s++) {
    if (sched.tile(s) >= 0) loader.issue(sched.tile(s), pages[s], k_stage(s), v_stage(s));
    cp_async_commit();
  }
  int32_t next_pages[Loader::kPasses];
  if (sched.tile(S - 1) >= 0) loader.fetch_pages(sched.tile(S - 1), next_pages);

  int i = 0;
  for (;; i++) {
    const int tile = sched.tile(i);
    if (tile < 0) break;
    const int next = i + S - 1;
    const int claimed = threadIdx.x == 0 ? sched.claim(i + S + 2) : -1;
    if (sched.tile(next) >= 0) loader.issue(sched.tile(next), next_pages, k_stage(next % S), v_stage(next % S));
    cp_async_commit();
    if (sched.tile(next + 1) >= 0) loader.fetch_pages(sched.tile(next + 1), next_pages);  // in flight while this tile computes
    cp_async_wait<S - 1>();
    __syncthreads();
    const int valid = min(Loader::kTileTokens, loader.tok_end - (loader.tok_begin + tile * Loader::kTileTokens));
    compute(tile, (const T *)k_stage(i % S), (const T *)v_stage(i % S), valid);
    if (threadIdx.x == 0) sched.publish(i + S + 1, pending), pending = claimed;
    __syncthreads();  // the stage is overwritten by the next iteration's issue
  }
  cp_async_wait<0>();
  return i;
}

// The same schedule over BulkTileLoader (kMathTensorBulk, sm_90+). Each stage has a barrier that
// thread 0 arms with the stage's byte count and every row copy completes on; all threads wait on it, so
// no block barrier is needed before the compute, only the one after it (the stage is rewritten next).
template <class Loader, int kStageElems, typename T, class Compute>
__device__ __forceinline__ int stream_tiles_bulk(const Loader &loader, const TileSchedule &sched, T *smem, Compute compute) {
  constexpr int S = kDecodeStages, kTileElems = kStageElems / 2;
  __shared__ uint64_t bars[S];
  int pending = -1;  // thread 0: the claim of slot i + S + 1, published at the end of iteration i
  auto k_stage = [&](int s) { return smem + s * kStageElems; };
  auto v_stage = [&](int s) { return smem + s * kStageElems + kTileElems; };
  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < S; s++) mbar_init(&bars[s], 1);
    sched.claim_now(0, S + 1);
    pending = sched.claim(S + 1);
  }
  // Thread 0's inits, and every thread's ordinary writes into this memory (the previous task's
  // epilogue), ordered before the copy engine's writes.
  fence_async_shared();
  __syncthreads();
  auto issue = [&](int slot, const int32_t(&pg)[Loader::kPasses]) {
    const int s = slot % S;
    if (threadIdx.x == 0) mbar_arrive_expect_tx(&bars[s], Loader::kStageBytes);
    loader.issue(sched.tile(slot), pg, k_stage(s), v_stage(s), &bars[s]);
  };

  int32_t pages[S - 1][Loader::kPasses];
#pragma unroll
  for (int s = 0; s < S - 1; s++)
    if (sched.tile(s) >= 0) loader.fetch_pages(sched.tile(s), pages[s]);
#pragma unroll
  for (int s = 0; s < S - 1; s++)
    if (sched.tile(s) >= 0) issue(s, pages[s]);
  int32_t next_pages[Loader::kPasses];
  if (sched.tile(S - 1) >= 0) loader.fetch_pages(sched.tile(S - 1), next_pages);

  int i = 0;
  for (;; i++) {
    const int tile = sched.tile(i);
    if (tile < 0) break;
    const int next = i + S - 1;
    const int claimed = threadIdx.x == 0 ? sched.claim(i + S + 2) : -1;
    if (sched.tile(next) >= 0) issue(next, next_pages);
    if (sched.tile(next + 1) >= 0) loader.fetch_pages(sched.tile(next + 1), next_pages);
    mbar_wait_parity(&bars[i % S], (unsigned)(i / S) & 1u);
    const int valid = min(Loader::kTileTokens, loader.tok_end - (loader.tok_begin + tile * Loader::kTileTokens));
    compute(tile, (const T *)k_stage(i % S), (const T *)v_stage(i % S), valid);
    if (threadIdx.x == 0) sched.publish(i + S + 1, pending), pending = claimed;
    __syncthreads();  // the stage is overwritten by the next iteration's issue
  }
  // Every phase has completed and every thread has passed its wait (the barrier above).
  if (threadIdx.x == 0)
#pragma unroll
    for (int s = 0; s < S; s++) mbar_inval(&bars[s]);
  return i;
}

}  // namespace pkv
