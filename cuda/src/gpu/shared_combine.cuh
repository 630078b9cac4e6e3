// The shared-prefix combine (shared_image.h, ShCombine): after the decode kernels have written each row's
// own result, every (combine row, query head) merges that result with the row's shared pieces by
// log-sum-exp and rewrites out and lse in place. One pass: a thread owns 8 output columns of one pair
// (a 16-byte out chunk; the slots' fp32 columns in 16-byte loads where the slot size allows), so a pair's
// D / 8 threads (8, 16 or 32) lie in one warp. A fixed grid strides over the pairs and reads their count
// from the device image, so a captured graph serves every later plan.
// A thread's loads are what hides the latency: it reads all its
// pieces' lse first (independent loads), then their outputs kBatch pieces at a time, every load of a
// batch issued before the first is used; the time no longer grows by one memory latency per piece.
#pragma once
#include "../core/shared_image.h"
#include "decode_vec.cuh"
#include "shared_launch.h"

namespace pkv {

template <typename T, int D>
__global__ void __launch_bounds__(kShCombineThreads) shared_combine_kernel(ShParams p) {
  constexpr int kChunks = D / 8;
  static_assert(32 % kChunks == 0, "a pair's threads lie in one warp");
  grid_dependency_wait();  // launched early (programmatically): the decode kernel's results first
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
    // Piece s of this KV head is the slot slot_base + s * num_kv_heads + head (no piece when off).
    const float *piece0 = p.partial + ((int64_t)cb.slot_base + head) * slot_floats;
    const float *lse_at = piece0 + (int64_t)g * D + y, *out_at = piece0 + (int64_t)y * D + c * 8;
    const int64_t piece_stride = (int64_t)p.num_kv_heads * slot_floats;
    // The maximum: every piece's lse, kBatch loads in flight beside the own result's.
    constexpr int kBatch = 8;
    float mx = own_lse;
    for (int s0 = 0; s0 < cb.pieces; s0 += kBatch) {
      float li[kBatch];
#pragma unroll
      for (int j = 0; j < kBatch; j++) li[j] = s0 + j < cb.pieces ? __ldcg(lse_at + (s0 + j) * piece_stride) : -INFINITY;
#pragma unroll
      for (int j = 0; j < kBatch; j++) mx = fmaxf(mx, li[j]);
    }
    __syncwarp();  // the pair's threads have read its lse before its first thread rewrites it
    if (!on) continue;
    float o[8], sum = 0.f;
    {
      const float w = own_lse == -INFINITY ? 0.f : exp2f(own_lse - mx);  // a state that saw no token
      vec_to_float<T>(own, o);
#pragma unroll
      for (int e = 0; e < 8; e++) o[e] = w == 0.f ? 0.f : w * o[e];
      sum = w;
    }
    // The outputs, kBatch pieces at a time (their lse again: L2 hits, loaded beside the outputs).
    for (int s0 = 0; s0 < cb.pieces; s0 += kBatch) {
      float li[kBatch], f[kBatch][8];
#pragma unroll
      for (int j = 0; j < kBatch; j++) {
        const bool in = s0 + j < cb.pieces;
        const float *src = out_at + (s0 + j) * piece_stride;
        li[j] = in ? __ldcg(lse_at + (s0 + j) * piece_stride) : -INFINITY;
        if (in && vec) {
          const float4 a = __ldcg(reinterpret_cast<const float4 *>(src)), b = __ldcg(reinterpret_cast<const float4 *>(src) + 1);
          f[j][0] = a.x, f[j][1] = a.y, f[j][2] = a.z, f[j][3] = a.w, f[j][4] = b.x, f[j][5] = b.y, f[j][6] = b.z, f[j][7] = b.w;
        } else {
#pragma unroll
          for (int e = 0; e < 8; e++) f[j][e] = in ? __ldcg(src + e) : 0.f;
        }
      }
#pragma unroll
      for (int j = 0; j < kBatch; j++) {
        const float w = li[j] == -INFINITY ? 0.f : exp2f(li[j] - mx);  // an empty piece, or past the last
        sum += w;
#pragma unroll
        for (int e = 0; e < 8; e++) o[e] = fmaf(w, f[j][e], o[e]);
      }
    }
    float lse2 = -INFINITY;  // no state saw a token: o stays 0
    if (sum > 0.f) {
      const float inv = 1.f / sum;
#pragma unroll
      for (int e = 0; e < 8; e++) o[e] *= inv;
      lse2 = mx + __log2f(sum);
    }
    reinterpret_cast<uint4 *>(static_cast<T *>(p.out) + qo * D)[c] = float_to_vec<T>(o);
    if (c == 0) p.lse[qo] = lse2 * 0.69314718055994530942f;
  }
}

}  // namespace pkv
