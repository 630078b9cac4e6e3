// Task epilogue: merge the block's token partitions (sm_lse[i * R + y], sm_o[(i * R + y) * D] for
// partition i of `parts` and query row y of the task's R, decode_rows.cuh), then either write the
// output (a row of one split)
// or write a fp32 partial and let the last split to finish merge all partials of its (row, head) by LSE.
// The last finisher is found with a per-(row, head) counter that it resets to zero (with a claiming
// row's cursor and slot count), so the next layer (or a CUDA-graph replay) starts clean without a memset.
#pragma once
#include "../core/plan_image.h"
#include "decode_launch.h"
#include "decode_rows.cuh"
#include "decode_softmax.cuh"
#include "decode_vec.cuh"

namespace pkv {

constexpr float kLn2 = 0.69314718055994530942f;

__device__ __forceinline__ unsigned long long atomic_add_acq_rel(unsigned long long *p, unsigned long long v) {
  unsigned long long old;
  asm volatile("atom.acq_rel.gpu.global.add.u64 %0, [%1], %2;\n" : "=l"(old) : "l"(p), "l"(v) : "memory");
  return old;
}

template <typename T, int D>
__device__ __forceinline__ void store_output(const DecodeParams &p, int64_t qo_row, int c, float merged_lse,
                                             const float (&o)[8]) {
  reinterpret_cast<uint4 *>(static_cast<T *>(p.out) + qo_row * D)[c] = float_to_vec<T>(o);
  if (p.lse && c == 0) p.lse[qo_row] = merged_lse * kLn2;  // natural log, as the header specifies
}

// The last finisher's merge of n partials with the whole block, staged in the task's shared memory
// (`scratch`, kScratchBytes): the partials are copied in with cp.async, all of a chunk in flight at once
// (one L2 round trip per chunk, where loads into registers took one per eight splits), while the n x g
// log-sum-exps are loaded and turned into weights (one warp per head); then each thread sums its float4
// columns over the chunk's splits from shared memory. The merge is the last few microseconds of every
// split step (results/v8-trace-merge-e344004.txt). Returns false, having done nothing, if not even the
// weights and one split fit.
template <typename T, int D, int kThreads, size_t kScratchBytes, bool kQueries>
__device__ bool merge_partials(const DecodeParams &p, int b, const PlanRow &row, int head, int64_t first, int n,
                               float *scratch) {
  using Rows = TaskRows<kQueries>;
  constexpr int kQuads = D / 4, kMaxUnits = (16 * kQuads + kThreads - 1) / kThreads;  // query rows <= 16
  const int g = Rows::count(row, p.group), count = n * g, units = g * kQuads, lane = threadIdx.x & 31,
            warp = threadIdx.x >> 5;
  const int weight_floats = (count + 3) & ~3;  // keeps the partials 16-byte aligned
  float *weights = scratch, *lses = scratch + weight_floats;
  float4 *parts = reinterpret_cast<float4 *>(lses + 16);
  const int64_t room = (int64_t)kScratchBytes - (int64_t)(weight_floats + 16) * sizeof(float);
  const int chunk = (int)min((int64_t)n, room / (units * (int64_t)sizeof(float4)));
  if (chunk < 1) return false;
  const float4 *src = reinterpret_cast<const float4 *>(p.partial_o + first * D);
  auto stage = [&](int first) {  // splits [first, first + chunk) into parts
    const int total = min(chunk, n - first) * units;
    for (int i = threadIdx.x; i < total; i += kThreads) cp_async16(parts + i, src + (int64_t)first * units + i, 16);
    cp_async_commit();
  };
  stage(0);
  for (int i = threadIdx.x; i < count; i += kThreads) weights[i] = __ldcg(p.partial_lse + first + i);
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
  float4 acc[kMaxUnits];
#pragma unroll
  for (int k = 0; k < kMaxUnits; k++) acc[k] = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int first = 0; first < n; first += chunk) {
    if (first > 0) {
      __syncthreads();  // every thread is done with the previous chunk
      stage(first);
    }
    cp_async_wait<0>();
    __syncthreads();  // the chunk (and, the first time, the weights) visible to every thread
    const int last = min(n, first + chunk);
#pragma unroll
    for (int k = 0; k < kMaxUnits; k++) {
      const int u = threadIdx.x + k * kThreads;
      if (u >= units) break;
      const int y = u / kQuads;
      for (int i = first; i < last; i++) {
        const float w = weights[i * g + y];
        const float4 v = parts[(i - first) * units + u];
        acc[k].x = fmaf(w, v.x, acc[k].x), acc[k].y = fmaf(w, v.y, acc[k].y);
        acc[k].z = fmaf(w, v.z, acc[k].z), acc[k].w = fmaf(w, v.w, acc[k].w);
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kMaxUnits; k++) {
    const int u = threadIdx.x + k * kThreads;
    if (u >= units) break;
    const int y = u / kQuads, c = u % kQuads;
    const int64_t qo = Rows::qo(p, b, row, head, y);
    auto *dst = reinterpret_cast<typename Pair<T>::type *>(static_cast<T *>(p.out) + qo * D + c * 4);
    dst[0] = Pair<T>::from_float2(acc[k].x, acc[k].y);
    dst[1] = Pair<T>::from_float2(acc[k].z, acc[k].w);
    if (p.lse && c == 0) p.lse[qo] = lses[y] * kLn2;
  }
  return true;
}

// The output of a task that saw tokens: the output itself (a row of one split), or a partial slot, and
// the merge by whichever split completes the row's count (see write_task_output).
template <typename T, int D, int kThreads, size_t kScratchBytes, bool kQueries>
__device__ void write_and_merge(const DecodeParams &p, int b, int head, int split, const PlanRow &row,
                                const float *sm_lse, const float *sm_o, int parts, float *scratch, int claimed,
                                int row_tiles) {
  using Rows = TaskRows<kQueries>;
  constexpr int kVecs = D / 8;
  const int g = Rows::count(row, p.group), units = g * kVecs;
  const int n = row.num_splits;
  const int64_t first = Rows::first_partial(p, row, head);
  const int64_t pair = (int64_t)b * p.num_kv_heads + head;
  __shared__ int s_slot, s_merged;
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
      store_output<T, D>(p, Rows::qo(p, b, row, head, y), c, lse, o);
    } else {
      float *dst = p.partial_o + (first + (int64_t)split * g + y) * D + c * 8;
      reinterpret_cast<float4 *>(dst)[0] = make_float4(o[0], o[1], o[2], o[3]);
      reinterpret_cast<float4 *>(dst)[1] = make_float4(o[4], o[5], o[6], o[7]);
      if (c == 0) p.partial_lse[first + (int64_t)split * g + y] = lse;
    }
  }
  if (n == 1) return;

  // Publish the partial and count this split (or its tiles) in; the block that completes the count merges.
  // The barrier orders every thread's partial stores before thread 0's release; its acquire orders the
  // other splits' partials before this block's reads (after the next barrier). One atomic both counts
  // and returns how many splits counted: every split that took a slot counts before the row's tiles are
  // complete, so that is the number of slots to merge, with no further read.
  __syncthreads();
  unsigned long long *counter = p.merge_counters + pair;
  if (threadIdx.x == 0) {
    const unsigned long long add = merge_count_add(claimed);
    const unsigned long long now = atomic_add_acq_rel(counter, add) + add;
    s_merged = merge_work_done(now) == (claimed > 0 ? row_tiles : n) ? merge_splits_counted(now) : 0;
  }
  __syncthreads();
  const int merged = s_merged;
  if (merged == 0) return;
  // Clean for the next launch (no split of this row takes a slot or counts after this point).
  auto reset = [&] {
    if (threadIdx.x == 0) *counter = 0, p.slot_counters[pair] = 0;
  };
  if (merge_partials<T, D, kThreads, kScratchBytes, kQueries>(p, b, row, head, first, merged, scratch)) {
    reset();
    return;
  }
  for (int u = threadIdx.x; u < units; u += kThreads) {
    const int y = u / kVecs, c = u % kVecs;
    float o[8];
    // __ldcg: the partials were written by other blocks; read them from L2, not a stale L1 line.
    float lse = merge_states(
        merged, [&](int i) { return __ldcg(p.partial_lse + first + (int64_t)i * g + y); },
        [&](int i, float(&f)[8]) {
          const float4 *src = reinterpret_cast<const float4 *>(p.partial_o + (first + (int64_t)i * g + y) * D + c * 8);
          float4 a = __ldcg(src), b4 = __ldcg(src + 1);
          f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b4.x, f[5] = b4.y, f[6] = b4.z, f[7] = b4.w;
        },
        o);
    store_output<T, D>(p, Rows::qo(p, b, row, head, y), c, lse, o);
  }
  reset();
}

// claimed: tiles this task computed if its row's splits claim tiles (PlanTask), else -1; row_tiles:
// the row's tiles then. A claiming row counts tiles, not splits: a split that computed none takes no
// partial slot and counts nothing (so a helper that came too late costs the row nothing), the others
// take slots in the order they finish, and the one whose tiles complete the row merges the slots taken.
// Its cursor is reset only by the last of its splits out: a late helper may claim after the merge.
// `scratch`: the task's shared memory (kScratchBytes), free once sm_lse and sm_o are consumed.
template <typename T, int D, int kThreads, size_t kScratchBytes, bool kQueries = false>
__device__ void write_task_output(const DecodeParams &p, int b, int head, int split, const PlanRow &row,
                                  const float *sm_lse, const float *sm_o, int parts, float *scratch, int claimed,
                                  int row_tiles) {
  const int64_t pair = (int64_t)b * p.num_kv_heads + head;
  if (claimed != 0)
    write_and_merge<T, D, kThreads, kScratchBytes, kQueries>(p, b, head, split, row, sm_lse, sm_o, parts, scratch, claimed,
                                                             row_tiles);
  if (claimed >= 0 && threadIdx.x == 0 && atomicAdd(p.splits_out + pair, 1) == row.num_splits - 1)
    p.tile_cursors[pair] = 0, p.splits_out[pair] = 0;
}

}  // namespace pkv
