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

}  // namespace pkv
