// Task body on CUDA cores: (batch row, KV head, token range) streamed once through the pipeline, all g
// query heads of the group computed against each tile.
//
// Thread layout (256 threads): x = tid % BDX owns two 8-element slices of head_dim (x and x + BDX, so a
// row's lanes read one contiguous 128-byte line), y = query head of the group, z = token partition.
// Each z walks its own 4-token chunks of the tile; the z partial states are merged at the end.
#pragma once
#include "../core/plan_image.h"
#include "decode_launch.h"
#include "decode_merge.cuh"
#include "decode_pipeline.cuh"
#include "decode_rows.cuh"
#include "decode_softmax.cuh"
#include "decode_tile.cuh"

namespace pkv {

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

// Load: the loader axis (decode_tile.cuh). This body reads K and V as plain rows, which only the
// cp.async loader writes.
// kQueries: the plan may hold rows of several queries (decode_rows.cuh), which never reach this body: it
// reads its decode rows' q rows in place (a mixed step's q interleaves them with the others).
template <typename T, int D, class Load = CpAsyncLoad, bool kQueries = false>
struct CoreBody {
  using Smem = T;  // the element type of its pipeline's shared memory
  static constexpr int kThreads = 256;
  static constexpr int kBdx = D / 16;
  static constexpr int kTile = decode_tile_tokens(D, PKV_MATH_CUDA_CORES);
  static constexpr int kChunk = 4;  // tokens per online-softmax update: one rescale per 4 tokens
  static constexpr int kChunks = kTile / kChunk;
  using Loader = typename Load::template Loader<T, D, kThreads, kTile, false>;
  static_assert(!Loader::kBulk, "the CUDA-core body reads plain rows: cp.async only");
  static constexpr int kStageElems = Loader::kStageElems;
  static constexpr size_t kSmemBytes = kDecodeStages * (size_t)kStageElems * sizeof(T);
  // The z-merge scratch (lse + output per (z, y)) reuses the pipeline's shared memory.
  static_assert((kThreads / kBdx) * (D + 1) * sizeof(float) <= kSmemBytes, "merge scratch fits");

  // Token partitions: a power of two that divides kChunks, so every z group runs the same trip count.
  static __device__ __forceinline__ int z_groups(int group) {
    int cap = min(kThreads / (kBdx * group), kChunks), z = 1;
    while (z * 2 <= cap) z *= 2;
    return z;
  }

  static __device__ void run(const DecodeParams &p, const PlanTask task, T *smem) {
    const PlanRow row = plan_rows(p.plan)[task.row];
    const int head = task_head(task), split = task_split(task);
    const int g = p.group, bdz = z_groups(g);
    const int tid = threadIdx.x, x = tid % kBdx, y = (tid / kBdx) % g, z = tid / (kBdx * g);
    const bool computes = z < bdz;
    const int64_t qo_row = TaskRows<kQueries>::qo(p, task.row, row, head, y);  // [batch][Hq], Hq = Hkv * g

    float q[16];
    if (computes) {
      load_slice<T, D>(static_cast<const T *>(p.q) + qo_row * D, x, q);
#pragma unroll
      for (int j = 0; j < 16; j++) q[j] *= p.scale_log2;
    }

    __shared__ int claim_ring[TileSchedule::kRing];
    const TaskTiles tiles = task_tiles<kTile>(p, task, row, head, claim_ring);
    Loader loader{static_cast<const T *>(p.k), static_cast<const T *>(p.v), row_table(p.table, p.table_stride, row),
                  tiles.tok_begin, tiles.tok_end, head, p.num_kv_heads, p.page_shift};
    SoftmaxState st;
    const int done = stream_tiles<Loader, kStageElems>(loader, tiles.sched, smem, [&](int, const T *ks, const T *vs, int valid) {
      if (!computes) return;
      for (int j = z; j < kChunks; j += bdz) {
        const int t0 = j * kChunk;
        if (t0 >= valid) break;  // the rest of the tile is past the task's end
        float s[kChunk];
#pragma unroll
        for (int t = 0; t < kChunk; t++) {
          float kf[16];
          load_slice<T, D>(ks + (t0 + t) * D, x, kf);
          float dot = 0.f;
#pragma unroll
          for (int e = 0; e < 16; e++) dot = fmaf(q[e], kf[e], dot);
          dot = lane_group_sum<kBdx>(dot);
          s[t] = t0 + t < valid ? dot : -INFINITY;
        }
        st.update(s, [&](int t, float(&vf)[16]) { load_slice<T, D>(vs + (t0 + t) * D, x, vf); });
      }
    });

    // Merge the z partitions: each writes (lse, normalised output) into the reused pipeline memory.
    float *sm_lse = reinterpret_cast<float *>(smem);
    float *sm_o = sm_lse + kThreads / kBdx;
    if (computes) {
      const float inv = st.l > 0.f ? 1.f / st.l : 0.f;
      float *o = sm_o + (z * g + y) * D;
#pragma unroll
      for (int j = 0; j < 8; j++) {
        o[x * 8 + j] = st.o[j] * inv;
        o[(x + kBdx) * 8 + j] = st.o[8 + j] * inv;
      }
      if (x == 0) sm_lse[z * g + y] = st.lse();
    }
    __syncthreads();
    write_task_output<T, D, kThreads, kSmemBytes, kQueries>(p, task.row, head, split, row, sm_lse, sm_o, bdz, sm_lse,
                                      tiles.sched.cursor ? done : -1, tiles.sched.ntiles);
    __syncthreads();  // the next task's prologue reuses this memory
  }
};

}  // namespace pkv
