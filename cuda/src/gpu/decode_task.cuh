// One task: (batch row, KV head, token range). Streams the range's K and V once through a cp.async
// pipeline and computes all g query heads of the group against each tile, then writes the output (one
// split) or a partial that the last finishing split merges.
//
// Thread layout (kDecodeThreads): x = tid % BDX owns two 8-element slices of head_dim (x and x + BDX, so
// a row's lanes read one contiguous 128-byte line), y = query head of the group, z = token partition.
// Each z walks its own 4-token chunks of the tile; the z partial states are merged at the end.
#pragma once
#include "../core/plan.h"
#include "decode_launch.h"
#include "decode_merge.cuh"
#include "decode_softmax.cuh"
#include "decode_tile.cuh"

namespace pkv {

template <typename T, int D>
struct DecodeLayout {
  static constexpr int kBdx = D / 16;
  static constexpr int kTile = decode_tile_tokens(D);
  static constexpr int kChunk = 4;  // tokens per online-softmax update: one rescale per 4 tokens
  static constexpr int kChunks = kTile / kChunk;
  static constexpr size_t kStageElems = 2 * (size_t)kTile * D;  // K then V
  static constexpr size_t kSmemBytes = kDecodeStages * kStageElems * sizeof(T);
  // The z-merge scratch (lse + output per (z, y)) reuses the pipeline's shared memory.
  static_assert((kDecodeThreads / kBdx) * (D + 1) * sizeof(float) <= kSmemBytes, "merge scratch fits");

  // Token partitions: a power of two that divides kChunks, so every z group runs the same trip count.
  static __device__ __forceinline__ int z_groups(int group) {
    int cap = min(kDecodeThreads / (kBdx * group), kChunks), z = 1;
    while (z * 2 <= cap) z *= 2;
    return z;
  }
};

template <typename T, int D>
__device__ __forceinline__ void load_slice(const T *row, int x, float (&f)[16]) {
  constexpr int kBdx = D / 16;
  float a[8], b[8];
  vec_to_float<T>(*reinterpret_cast<const uint4 *>(row + x * 8), a);
  vec_to_float<T>(*reinterpret_cast<const uint4 *>(row + (x + kBdx) * 8), b);
#pragma unroll
  for (int j = 0; j < 8; j++) {
    f[j] = a[j];
    f[8 + j] = b[j];
  }
}

template <typename T, int D>
__device__ void run_task(const DecodeParams &p, const PlanTask task, T *smem) {
  using L = DecodeLayout<T, D>;
  const PlanRow row = reinterpret_cast<const PlanRow *>(static_cast<const char *>(p.plan) + sizeof(PlanHeader))[task.row];
  const int head = task.head_split >> 16, split = task.head_split & 0xffff;
  const int g = p.group, bdz = L::z_groups(g);
  const int tid = threadIdx.x, x = tid % L::kBdx, y = (tid / L::kBdx) % g, z = tid / (L::kBdx * g);
  const bool computes = z < bdz;
  const int64_t qo_row = ((int64_t)task.row * p.num_kv_heads + head) * g + y;  // [batch][Hq], Hq = Hkv * g

  float q[16];
  if (computes) {
    load_slice<T, D>(static_cast<const T *>(p.q) + qo_row * D, x, q);
#pragma unroll
    for (int j = 0; j < 16; j++) q[j] *= p.scale_log2;
  }

  TileLoader<T, D> loader;
  loader.k = static_cast<const T *>(p.k);
  loader.v = static_cast<const T *>(p.v);
  loader.table_row = p.table + (int64_t)row.table_row * p.table_stride;
  loader.tok_begin = task.tok_begin;
  loader.tok_end = task.tok_end;
  loader.head = head;
  loader.num_kv_heads = p.num_kv_heads;
  loader.page_shift = p.page_shift;
  const int ntiles = (task.tok_end - task.tok_begin + L::kTile - 1) / L::kTile;
  auto k_stage = [&](int s) { return smem + s * L::kStageElems; };
  auto v_stage = [&](int s) { return smem + s * L::kStageElems + L::kTile * D; };

#pragma unroll
  for (int s = 0; s < kDecodeStages - 1; s++) {
    if (s < ntiles) {
      loader.fetch_pages(s);
      loader.issue(s, k_stage(s), v_stage(s));
    }
    cp_async_commit();
  }
  if (kDecodeStages - 1 < ntiles) loader.fetch_pages(kDecodeStages - 1);

  SoftmaxState st;
  for (int i = 0; i < ntiles; i++) {
    const int next = i + kDecodeStages - 1;
    if (next < ntiles) loader.issue(next, k_stage(next % kDecodeStages), v_stage(next % kDecodeStages));
    cp_async_commit();
    if (next + 1 < ntiles) loader.fetch_pages(next + 1);  // in flight while this tile computes
    cp_async_wait<kDecodeStages - 1>();
    __syncthreads();
    if (computes) {
      const T *ks = k_stage(i % kDecodeStages), *vs = v_stage(i % kDecodeStages);
      const int valid = min(L::kTile, task.tok_end - (task.tok_begin + i * L::kTile));
      for (int j = z; j < L::kChunks; j += bdz) {
        const int t0 = j * L::kChunk;
        if (t0 >= valid) break;  // the rest of the tile is past the task's end
        float s[L::kChunk];
#pragma unroll
        for (int t = 0; t < L::kChunk; t++) {
          float kf[16];
          load_slice<T, D>(ks + (t0 + t) * D, x, kf);
          float dot = 0.f;
#pragma unroll
          for (int e = 0; e < 16; e++) dot = fmaf(q[e], kf[e], dot);
          dot = lane_group_sum<L::kBdx>(dot);
          s[t] = t0 + t < valid ? dot : -INFINITY;
        }
        st.update(s, [&](int t, float(&vf)[16]) { load_slice<T, D>(vs + (t0 + t) * D, x, vf); });
      }
    }
    __syncthreads();  // the stage is overwritten by the next iteration's issue
  }
  cp_async_wait<0>();

  // Merge the z partitions: each writes (lse, normalised output) into the reused pipeline memory.
  float *sm_lse = reinterpret_cast<float *>(smem);
  float *sm_o = sm_lse + kDecodeThreads / L::kBdx;
  if (computes) {
    const float inv = st.l > 0.f ? 1.f / st.l : 0.f;
    float *o = sm_o + (z * g + y) * D;
#pragma unroll
    for (int j = 0; j < 8; j++) {
      o[x * 8 + j] = st.o[j] * inv;
      o[(x + L::kBdx) * 8 + j] = st.o[8 + j] * inv;
    }
    if (x == 0) sm_lse[z * g + y] = st.lse();
  }
  __syncthreads();
  write_task_output<T, D>(p, task.row, head, split, row, sm_lse, sm_o, bdz);
  __syncthreads();  // the next task's prologue reuses this memory
}

}  // namespace pkv
