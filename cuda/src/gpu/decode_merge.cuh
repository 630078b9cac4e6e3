// Task epilogue: merge the block's token partitions (sm_lse[i * g + y], sm_o[(i * g + y) * D] for
// partition i of `parts`), then either write the output (a row of one split)
// or write a fp32 partial and let the last split to finish merge all partials of its (row, head) by LSE.
// The last finisher is found with a per-(row, head) counter that it resets to zero (with a claiming
// row's cursor and slot count), so the next layer (or a CUDA-graph replay) starts clean without a memset.
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

// Most split weights the parallel merge stages in shared memory (32 KiB): n splits x g heads.
constexpr int kMergeWeights = 8192;

// The last finisher's merge of n partials with the whole block: the n x g log-sum-exps are loaded at
// once into shared memory and turned into weights (one warp per head), then each thread sums a float4
// column over the splits four loads at a time. A loop of dependent L2 reads per split would cost a
// round trip each (the tail of every split row). `scratch` holds kMergeWeights + 16 floats.
template <typename T, int D, int kThreads>
__device__ void merge_partials(const DecodeParams &p, int64_t qo_base, int64_t slot_base, int n, float *scratch) {
  const int g = p.group, count = n * g, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float *weights = scratch, *lses = scratch + kMergeWeights;
  for (int i = threadIdx.x; i < count; i += kThreads) weights[i] = __ldcg(p.partial_lse + slot_base * g + i);
  __syncthreads();
  for (int y = warp; y < g; y += kThreads / 32) {
    float mx = -INFINITY, sum = 0.f;
    for (int i = lane; i < n; i += 32) mx = fmaxf(mx, weights[i * g + y]);
#pragma unroll
    for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    for (int i = lane; i < n; i += 32) sum += exp2f(weights[i * g + y] - mx);
#pragma unroll
    for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    const float inv = 1.f / sum;
    for (int i = lane; i < n; i += 32) weights[i * g + y] = exp2f(weights[i * g + y] - mx) * inv;
    if (lane == 0) lses[y] = mx + __log2f(sum);
  }
  __syncthreads();
  constexpr int kQuads = D / 4;
  const int64_t split_stride = (int64_t)g * D / 4;  // float4s between one split's partial and the next
  for (int u = threadIdx.x; u < g * kQuads; u += kThreads) {
    const int y = u / kQuads, c = u % kQuads;
    const float4 *src = reinterpret_cast<const float4 *>(p.partial_o + (slot_base * g + y) * D) + c;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    auto add = [&](float w, float4 v) {
      acc.x = fmaf(w, v.x, acc.x), acc.y = fmaf(w, v.y, acc.y), acc.z = fmaf(w, v.z, acc.z), acc.w = fmaf(w, v.w, acc.w);
    };
    // Eight loads in flight, then four, then one at a time: each round is an L2 round trip, and the
    // merge is the step's last few microseconds (results/v8-trace-5b07ee9.txt).
    int i = 0;
    for (; i + 8 <= n; i += 8) {
      float4 v[8];
#pragma unroll
      for (int j = 0; j < 8; j++) v[j] = __ldcg(src + (i + j) * split_stride);
#pragma unroll
      for (int j = 0; j < 8; j++) add(weights[(i + j) * g + y], v[j]);
    }
    for (; i + 4 <= n; i += 4) {
      float4 v0 = __ldcg(src + i * split_stride), v1 = __ldcg(src + (i + 1) * split_stride);
      float4 v2 = __ldcg(src + (i + 2) * split_stride), v3 = __ldcg(src + (i + 3) * split_stride);
      add(weights[i * g + y], v0), add(weights[(i + 1) * g + y], v1);
      add(weights[(i + 2) * g + y], v2), add(weights[(i + 3) * g + y], v3);
    }
    for (; i < n; i++) add(weights[i * g + y], __ldcg(src + i * split_stride));
    auto *dst = reinterpret_cast<typename Pair<T>::type *>(static_cast<T *>(p.out) + (qo_base + y) * D + c * 4);
    dst[0] = Pair<T>::from_float2(acc.x, acc.y);
    dst[1] = Pair<T>::from_float2(acc.z, acc.w);
    if (p.lse && c == 0) p.lse[qo_base + y] = lses[y] * kLn2;
  }
}

// The output of a task that saw tokens: the output itself (a row of one split), or a partial slot, and
// the merge by whichever split completes the row's count (see write_task_output).
template <typename T, int D, int kThreads>
__device__ void write_and_merge(const DecodeParams &p, int b, int head, int split, const PlanRow &row,
                                const float *sm_lse, const float *sm_o, int parts, float *scratch, int claimed,
                                int row_tiles) {
  constexpr int kVecs = D / 8;
  const int g = p.group, units = g * kVecs;
  const int64_t qo_base = ((int64_t)b * p.num_kv_heads + head) * g;
  const int n = row.num_splits;
  const int64_t slot_base = (int64_t)row.partial_base + (int64_t)head * n;  // this head's partial slots
  const int64_t pair = (int64_t)b * p.num_kv_heads + head;
  __shared__ int s_slot, s_last;
  if (claimed > 0) {
    if (threadIdx.x == 0) s_slot = atomicAdd(p.slot_counters + pair, 1);
    __syncthreads();
    split = s_slot;
  }

  for (int u = threadIdx.x; u < units; u += kThreads) {
    const int y = u / kVecs, c = u % kVecs;
    float o[8];
    float lse = merge_states(
        parts, [&](int i) { return sm_lse[i * g + y]; },
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

  // Publish the partial, then count this split (or its tiles) in; the block that completes the count merges.
  __threadfence();
  __syncthreads();
  int32_t *counter = p.merge_counters + pair;
  if (threadIdx.x == 0)
    s_last = claimed > 0 ? atomicAdd(counter, claimed) + claimed == row_tiles : atomicAdd(counter, 1) == n - 1;
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  // Every slot was taken before its tiles were counted, so the number of slots is final here.
  const int merged = claimed > 0 ? __ldcg(p.slot_counters + pair) : n;
  // Clean for the next launch (no split of this row takes a slot or counts after this point).
  auto reset = [&] {
    if (threadIdx.x == 0) *counter = 0, p.slot_counters[pair] = 0;
  };
  if (merged * g <= kMergeWeights) {
    merge_partials<T, D, kThreads>(p, qo_base, slot_base, merged, scratch);
    reset();
    return;
  }
  for (int u = threadIdx.x; u < units; u += kThreads) {
    const int y = u / kVecs, c = u % kVecs;
    float o[8];
    // __ldcg: the partials were written by other blocks; read them from L2, not a stale L1 line.
    float lse = merge_states(
        merged, [&](int i) { return __ldcg(p.partial_lse + (slot_base + i) * g + y); },
        [&](int i, float(&f)[8]) {
          const float4 *src = reinterpret_cast<const float4 *>(p.partial_o + ((slot_base + i) * g + y) * D + c * 8);
          float4 a = __ldcg(src), b4 = __ldcg(src + 1);
          f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b4.x, f[5] = b4.y, f[6] = b4.z, f[7] = b4.w;
        },
        o);
    store_output<T, D>(p, qo_base + y, c, lse, o);
  }
  reset();
}

// claimed: tiles this task computed if its row's splits claim tiles (PlanTask), else -1; row_tiles:
// the row's tiles then. A claiming row counts tiles, not splits: a split that computed none takes no
// partial slot and counts nothing (so a helper that came too late costs the row nothing), the others
// take slots in the order they finish, and the one whose tiles complete the row merges the slots taken.
// Its cursor is reset only by the last of its splits out: a late helper may claim after the merge.
template <typename T, int D, int kThreads>
__device__ void write_task_output(const DecodeParams &p, int b, int head, int split, const PlanRow &row,
                                  const float *sm_lse, const float *sm_o, int parts, float *scratch, int claimed,
                                  int row_tiles) {
  const int64_t pair = (int64_t)b * p.num_kv_heads + head;
  if (claimed != 0) write_and_merge<T, D, kThreads>(p, b, head, split, row, sm_lse, sm_o, parts, scratch, claimed, row_tiles);
  if (claimed >= 0 && threadIdx.x == 0 && atomicAdd(p.splits_out + pair, 1) == row.num_splits - 1)
    p.tile_cursors[pair] = 0, p.splits_out[pair] = 0;
}

}  // namespace pkv
