// The merge of a split tile's partials (multiquery_image.h, MqMerge): one block per merge; each thread
// combines 8 output columns of one query row over the splits by log-sum-exp (merge_states, the decode
// kernels' merge primitive) and writes the output and its lse.
#pragma once
#include "../core/multiquery_image.h"
#include "decode_softmax.cuh"
#include "decode_vec.cuh"
#include "multiquery_launch.h"

namespace pkv {

template <typename T, int D>
__global__ void __launch_bounds__(128) multiquery_merge_kernel(MqParams p) {
  constexpr int kChunks = D / 8;
  const MqMerge merge = mq_merges(p.image)[blockIdx.x];
  const MqTask task = mq_tasks(p.image)[merge.task];
  const MqRow row = mq_rows(p.image)[task.row];
  const int g = p.group, hq = p.num_kv_heads * g, rows = task.q_count * g;
  const int64_t slot_floats = mq_slot_floats(D);
  const float *slots = p.partial + merge.slot * slot_floats;
  for (int i = threadIdx.x; i < rows * kChunks; i += blockDim.x) {
    const int r = i / kChunks, c = i % kChunks;
    float o[8];
    // __ldcg: the partials were written by other blocks of the previous launch; read them from L2.
    const float lse2 = merge_states(
        merge.num_splits, [&](int s) { return __ldcg(slots + s * slot_floats + mq_slot_lse(D) + r); },
        [&](int s, float (&f)[8]) {
          const float4 *src = reinterpret_cast<const float4 *>(slots + s * slot_floats + (int64_t)r * D + c * 8);
          const float4 a = __ldcg(src), b = __ldcg(src + 1);
          f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
        },
        o);
    const int64_t qo = ((int64_t)row.q_offset + task.q_begin + r / g) * hq + (int64_t)task.head * g + r % g;
    reinterpret_cast<uint4 *>(static_cast<T *>(p.out) + qo * D)[c] = float_to_vec<T>(o);
    if (p.lse && c == 0) p.lse[qo] = lse2 * 0.69314718055994530942f;
  }
}

}  // namespace pkv
