// Task body on CUDA cores over FP8 pages: the CUDA-core body's layout and pipeline (decode_task_cores.cuh)
// with 1-byte codes. Thread x owns 16 contiguous elements of head_dim, one 16-byte load of codes per row
// (a row's D / 16 lanes read it as one contiguous run), converted in registers; q and out are Q (f16 or
// bf16). A token's K scale multiplies its score and its V scale its probability, once per token.
#pragma once
#include <type_traits>

#include "../core/plan_image.h"
#include "decode_launch.h"
#include "decode_merge.cuh"
#include "decode_pipeline.cuh"
#include "decode_softmax.cuh"
#include "decode_tile_fp8.cuh"

namespace pkv {

// The dtype axis of the launchers for FP8 pages with queries and outputs of type Q.
template <typename Q>
struct Fp8E4m3 {
  using Query = Q;
};
template <typename T> struct IsFp8 : std::false_type {};
template <typename Q> struct IsFp8<Fp8E4m3<Q>> : std::true_type {};

template <typename Q, int D>
struct Fp8CoreBody {
  using Smem = uint8_t;
  static constexpr int kThreads = 256;
  static constexpr int kBdx = D / 16;
  static constexpr int kTile = fp8_tile_tokens(D);
  static constexpr int kChunk = 4;  // tokens per online-softmax update
  static constexpr int kChunks = kTile / kChunk;
  using Loader = Fp8TileLoader<D, kThreads, kTile>;
  static constexpr int kStageElems = Loader::kStageElems;
  static constexpr size_t kSmemBytes = kDecodeStages * (size_t)kStageElems;
  static_assert((kThreads / kBdx) * (D + 1) * sizeof(float) <= kSmemBytes, "merge scratch fits");

  static __device__ __forceinline__ int z_groups(int group) {
    int cap = min(kThreads / (kBdx * group), kChunks), z = 1;
    while (z * 2 <= cap) z *= 2;
    return z;
  }

  static __device__ __forceinline__ void load_codes(const uint8_t *row, int x, float (&f)[16]) {
    fp8x16_to_float(*reinterpret_cast<const uint4 *>(row + x * 16), f);
  }

  static __device__ void run(const DecodeParams &p, const PlanTask task, uint8_t *smem) {
    const PlanRow row = plan_rows(p.plan)[task.row];
    const int head = task_head(task), split = task_split(task);
    const int g = p.group, bdz = z_groups(g);
    const int tid = threadIdx.x, x = tid % kBdx, y = (tid / kBdx) % g, z = tid / (kBdx * g);
    const bool computes = z < bdz;
    const int64_t qo_row = ((int64_t)task.row * p.num_kv_heads + head) * g + y;

    float q[16];
    if (computes) {
      const Q *qrow = static_cast<const Q *>(p.q) + qo_row * D + x * 16;
      float a[8], b[8];
      vec_to_float<Q>(*reinterpret_cast<const uint4 *>(qrow), a);
      vec_to_float<Q>(*reinterpret_cast<const uint4 *>(qrow + 8), b);
#pragma unroll
      for (int j = 0; j < 8; j++) q[j] = a[j] * p.scale_log2, q[8 + j] = b[j] * p.scale_log2;
    }

    __shared__ int claim_ring[TileSchedule::kRing];
    const TaskTiles tiles = task_tiles<kTile>(p, task, row, head, claim_ring);
    const Loader loader = Loader::of(p, row, tiles, head);
    SoftmaxState st;
    const int done = stream_tiles<Loader, kStageElems>(loader, tiles.sched, smem, [&](int, const uint8_t *ks, const uint8_t *vs, int valid) {
      if (!computes) return;
      const float *k_scale = Loader::scales(ks), *v_scale = Loader::scales(vs);
      for (int j = z; j < kChunks; j += bdz) {
        const int t0 = j * kChunk;
        if (t0 >= valid) break;
        float s[kChunk];
#pragma unroll
        for (int t = 0; t < kChunk; t++) {
          float kf[16];
          load_codes(ks + (t0 + t) * D, x, kf);
          float dot = 0.f;
#pragma unroll
          for (int e = 0; e < 16; e++) dot = fmaf(q[e], kf[e], dot);
          dot = lane_group_sum<kBdx>(dot);
          s[t] = t0 + t < valid ? dot * k_scale[t0 + t] : -INFINITY;
        }
        st.update_weighted(
            s, [&](int t) { return v_scale[t0 + t]; },
            [&](int t, float(&vf)[16]) { load_codes(vs + (t0 + t) * D, x, vf); });
      }
    });

    float *sm_lse = reinterpret_cast<float *>(smem);
    float *sm_o = sm_lse + kThreads / kBdx;
    if (computes) {
      const float inv = st.l > 0.f ? 1.f / st.l : 0.f;
      float *o = sm_o + (z * g + y) * D + x * 16;
#pragma unroll
      for (int j = 0; j < 16; j++) o[j] = st.o[j] * inv;
      if (x == 0) sm_lse[z * g + y] = st.lse();
    }
    __syncthreads();
    write_task_output<Q, D, kThreads, kSmemBytes>(p, task.row, head, split, row, sm_lse, sm_o, bdz, sm_lse,
                                                  tiles.sched.cursor ? done : -1, tiles.sched.ntiles);
    __syncthreads();  // the next task's prologue reuses this memory
  }
};

}  // namespace pkv
