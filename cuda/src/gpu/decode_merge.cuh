// Task epilogue: merge the block's token partitions, then either write the output (a row of one split)
// or write a fp32 partial and let the last split to finish merge all partials of its (row, head) by LSE.
// The last finisher is found with a per-(row, head) counter that it resets to zero, so the next layer
// (or a CUDA-graph replay) starts from a clean state without a memset.
#pragma once
#include "../core/plan.h"
#include "decode_launch.h"
#include "decode_softmax.cuh"
#include "decode_vec.cuh"

namespace pkv {

constexpr float kLn2 = 0.69314718055994530942f;

template <typename T, int D>
__device__ __forceinline__ void store_output(const DecodeParams &p, int64_t qo_row, int c, float merged_lse,
                                             const float (&o)[8]) {
  reinterpret_cast<uint4 *>(static_cast<T *>(p.out) + qo_row * D)[c] = float_to_vec<T>(o);
  if (p.lse && c == 0) p.lse[qo_row] = merged_lse * kLn2;  // natural log, as the header specifies
}

template <typename T, int D>
__device__ void write_task_output(const DecodeParams &p, int b, int head, int split, const PlanRow &row,
                                  const float *sm_lse, const float *sm_o, int bdz) {
  constexpr int kVecs = D / 8;
  const int g = p.group, units = g * kVecs;
  const int64_t qo_base = ((int64_t)b * p.num_kv_heads + head) * g;
  const int n = row.num_splits;
  const int64_t slot_base = (int64_t)row.partial_base + (int64_t)head * n;  // this head's partial slots

  for (int u = threadIdx.x; u < units; u += kDecodeThreads) {
    const int y = u / kVecs, c = u % kVecs;
    float o[8];
    float lse = merge_states(
        bdz, [&](int i) { return sm_lse[i * g + y]; },
        [&](int i, float(&f)[8]) {
          const float *src = sm_o + (i * g + y) * D + c * 8;
#pragma unroll
          for (int j = 0; j < 8; j++) f[j] = src[j];
        },
        o);
    if (n == 1) {
      store_output<T, D>(p, qo_base + y, c, lse, o);
    } else {
      float *dst = p.partial_o + ((slot_base + split) * g + y) * D + c * 8;
      reinterpret_cast<float4 *>(dst)[0] = make_float4(o[0], o[1], o[2], o[3]);
      reinterpret_cast<float4 *>(dst)[1] = make_float4(o[4], o[5], o[6], o[7]);
      if (c == 0) p.partial_lse[(slot_base + split) * g + y] = lse;
    }
  }
  if (n == 1) return;

  // Publish the partial, then count this split in; the block that completes the count merges.
  __shared__ int s_last;
  __threadfence();
  __syncthreads();
  int32_t *counter = p.merge_counters + (int64_t)b * p.num_kv_heads + head;
  if (threadIdx.x == 0) s_last = atomicAdd(counter, 1) == n - 1;
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  for (int u = threadIdx.x; u < units; u += kDecodeThreads) {
    const int y = u / kVecs, c = u % kVecs;
    float o[8];
    // __ldcg: the partials were written by other blocks; read them from L2, not a stale L1 line.
    float lse = merge_states(
        n, [&](int i) { return __ldcg(p.partial_lse + (slot_base + i) * g + y); },
        [&](int i, float(&f)[8]) {
          const float4 *src = reinterpret_cast<const float4 *>(p.partial_o + ((slot_base + i) * g + y) * D + c * 8);
          float4 a = __ldcg(src), b4 = __ldcg(src + 1);
          f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b4.x, f[5] = b4.y, f[6] = b4.z, f[7] = b4.w;
        },
        o);
    store_output<T, D>(p, qo_base + y, c, lse, o);
  }
  if (threadIdx.x == 0) *counter = 0;
}

}  // namespace pkv
