// The shared-prefix combine (shared_image.h, ShCombine): after the decode kernels have written each row's
// own result, every (combine row, query head) merges that result with the row's shared pieces by
// log-sum-exp and rewrites out and lse in place. One pass: a thread owns 8 output columns of one pair
// (a 16-byte out chunk; the slots' fp32 columns in 16-byte loads where the slot size allows), so a pair's
// D / 8 threads (8, 16 or 32) lie in one warp. A fixed grid strides over the pairs and reads their count
// from the device image, so a captured graph serves every later plan.
#pragma once
#include "../core/shared_image.h"
#include "decode_softmax.cuh"
#include "decode_vec.cuh"
#include "shared_launch.h"

namespace pkv {

template <typename T, int D>
__global__ void __launch_bounds__(128) shared_combine_kernel(ShParams p) {
  constexpr int kChunks = D / 8;
  static_assert(32 % kChunks == 0, "a pair's threads lie in one warp");
  const ShCombine *combines = sh_combines(p.image);
  const int g = p.group, hq = p.num_kv_heads * g, lane = threadIdx.x & 31;
  const int64_t slot_floats = sh_slot_floats(g, D);
  const bool vec = slot_floats % 4 == 0;  // every slot run 16-byte aligned
  const int64_t items = (int64_t)sh_header(p.image).num_combines * hq * kChunks;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  // The loop runs warp by warp (its bound is the warp's first item), so a whole warp reaches __syncwarp.
  for (int64_t w0 = (int64_t)blockIdx.x * blockDim.x + (threadIdx.x & ~31); w0 < items; w0 += stride) {
    const int64_t i = w0 + lane;
    const bool on = i < items;
    const int c = (int)(i % kChunks);
    const int64_t pair = i / kChunks;
    const ShCombine cb = on ? combines[pair / hq] : ShCombine{};
    const int head_q = (int)(pair % hq), head = head_q / g, y = head_q % g;
    const int64_t qo = (int64_t)cb.row * hq + head_q;
    uint4 own = {};
    float own_lse = -INFINITY;
    if (on) {
      own = reinterpret_cast<const uint4 *>(static_cast<const T *>(p.out) + qo * D)[c];
      own_lse = p.lse[qo] * 1.4426950408889634f;  // natural log -> log2
    }
    __syncwarp();  // the pair's threads have read its lse before its first thread rewrites it
    if (!on) continue;
    auto slot = [&](int s) {  // state s >= 1 is piece s - 1
      return p.partial + ((int64_t)cb.slot_base + (int64_t)(s - 1) * p.num_kv_heads + head) * slot_floats;
    };
    float o[8];
    const float lse2 = merge_states(
        cb.pieces + 1, [&](int s) { return s == 0 ? own_lse : __ldcg(slot(s) + (int64_t)g * D + y); },
        [&](int s, float (&f)[8]) {
          if (s == 0) return vec_to_float<T>(own, f);
          const float *src = slot(s) + (int64_t)y * D + c * 8;
          if (vec) {
            const float4 a = __ldcg(reinterpret_cast<const float4 *>(src)), b = __ldcg(reinterpret_cast<const float4 *>(src) + 1);
            f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
          } else {
#pragma unroll
            for (int e = 0; e < 8; e++) f[e] = __ldcg(src + e);
          }
        },
        o);
    reinterpret_cast<uint4 *>(static_cast<T *>(p.out) + qo * D)[c] = float_to_vec<T>(o);
    if (c == 0) p.lse[qo] = lse2 * 0.69314718055994530942f;
  }
}

}  // namespace pkv
