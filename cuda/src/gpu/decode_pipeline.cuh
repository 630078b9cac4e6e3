// The cp.async pipeline a task runs: kDecodeStages stages of K and V, tiles issued stages - 1 ahead,
// page ids fetched one tile ahead of their issue. `compute(tile, ks, vs, valid)` sees each tile once,
// between barriers.
#pragma once
#include "decode_launch.h"
#include "decode_vec.cuh"

namespace pkv {

template <class Loader, int kStageElems, typename T, class Compute>
__device__ __forceinline__ void stream_tiles(const Loader &loader, int ntiles, T *smem, Compute compute) {
  constexpr int S = kDecodeStages, kTileElems = kStageElems / 2;
  auto k_stage = [&](int s) { return smem + s * kStageElems; };
  auto v_stage = [&](int s) { return smem + s * kStageElems + kTileElems; };

  // Prologue: all page ids first (independent loads in flight together), then the copies.
  int32_t pages[S - 1][Loader::kPasses];
#pragma unroll
  for (int s = 0; s < S - 1; s++)
    if (s < ntiles) loader.fetch_pages(s, pages[s]);
#pragma unroll
  for (int s = 0; s < S - 1; s++) {
    if (s < ntiles) loader.issue(s, pages[s], k_stage(s), v_stage(s));
    cp_async_commit();
  }
  int32_t next_pages[Loader::kPasses];
  if (S - 1 < ntiles) loader.fetch_pages(S - 1, next_pages);

  for (int i = 0; i < ntiles; i++) {
    const int next = i + S - 1;
    if (next < ntiles) loader.issue(next, next_pages, k_stage(next % S), v_stage(next % S));
    cp_async_commit();
    if (next + 1 < ntiles) loader.fetch_pages(next + 1, next_pages);  // in flight while this tile computes
    cp_async_wait<S - 1>();
    __syncthreads();
    const int valid = min(Loader::kTileTokens, loader.tok_end - (loader.tok_begin + i * Loader::kTileTokens));
    compute(i, (const T *)k_stage(i % S), (const T *)v_stage(i % S), valid);
    __syncthreads();  // the stage is overwritten by the next iteration's issue
  }
  cp_async_wait<0>();
}

// The same schedule over BulkTileLoader (kMathTensorBulk, sm_90+). Each stage has a barrier that
// thread 0 arms with the stage's byte count and every row copy completes on; all threads wait on it, so
// no block barrier is needed before the compute, only the one after it (the stage is rewritten next).
template <class Loader, int kStageElems, typename T, class Compute>
__device__ __forceinline__ void stream_tiles_bulk(const Loader &loader, int ntiles, T *smem, Compute compute) {
  constexpr int S = kDecodeStages, kTileElems = kStageElems / 2;
  __shared__ uint64_t bars[S];
  auto k_stage = [&](int s) { return smem + s * kStageElems; };
  auto v_stage = [&](int s) { return smem + s * kStageElems + kTileElems; };
  if (threadIdx.x == 0)
#pragma unroll
    for (int s = 0; s < S; s++) mbar_init(&bars[s], 1);
  // Thread 0's inits, and every thread's ordinary writes into this memory (the previous task's
  // epilogue), ordered before the copy engine's writes.
  fence_async_shared();
  __syncthreads();
  auto issue = [&](int tile, const int32_t(&pg)[Loader::kPasses]) {
    const int s = tile % S;
    if (threadIdx.x == 0) mbar_arrive_expect_tx(&bars[s], Loader::kStageBytes);
    loader.issue(tile, pg, k_stage(s), v_stage(s), &bars[s]);
  };

  int32_t pages[S - 1][Loader::kPasses];
#pragma unroll
  for (int s = 0; s < S - 1; s++)
    if (s < ntiles) loader.fetch_pages(s, pages[s]);
#pragma unroll
  for (int s = 0; s < S - 1; s++)
    if (s < ntiles) issue(s, pages[s]);
  int32_t next_pages[Loader::kPasses];
  if (S - 1 < ntiles) loader.fetch_pages(S - 1, next_pages);

  for (int i = 0; i < ntiles; i++) {
    const int next = i + S - 1;
    if (next < ntiles) issue(next, next_pages);
    if (next + 1 < ntiles) loader.fetch_pages(next + 1, next_pages);
    mbar_wait_parity(&bars[i % S], (unsigned)(i / S) & 1u);
    const int valid = min(Loader::kTileTokens, loader.tok_end - (loader.tok_begin + i * Loader::kTileTokens));
    compute(i, (const T *)k_stage(i % S), (const T *)v_stage(i % S), valid);
    __syncthreads();  // the stage is overwritten by the next iteration's issue
  }
  // Every phase has completed and every thread has passed its wait (the barrier above).
  if (threadIdx.x == 0)
#pragma unroll
    for (int s = 0; s < S; s++) mbar_inval(&bars[s]);
}

}  // namespace pkv
