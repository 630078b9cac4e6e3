// The wide multi-query tiles (multiquery_image.h) on Hopper's warpgroup MMAs (wgmma_tasks.cuh): a tile
// of up to 128 query rows of a long chunk against its context, causal among the chunk's own tokens.
// Task row r is query head r % group of the tile's token r / group, at context position first_pos +
// r / group, and sees the context up to that position. A task whose tile is unsplit writes the output
// and its lse; a split writes its fp32 partial, which the merge kernel combines.
#pragma once
#include "../core/multiquery_image.h"
#include "multiquery_launch.h"
#include "wgmma_tasks.cuh"

namespace pkv {

static_assert(kMqWideRows == kWgTaskRows, "a wide tile fills the warpgroup kernel's rows");

template <typename T, int D>
struct MqWgSection {
  using Params = MqParams;
  using Elem = T;
  static constexpr int kHeadDim = D;
  static constexpr bool kCausal = true;
  struct Task {
    int32_t head, table_row, kv_begin, kv_end, rows, first_pos;
    int32_t first_token, slot;  // q and out row of the tile's first token; partial slot (-1: unsplit)
  };
  __device__ static int num_tasks(const Params &p) { return mq_header(p.image).num_wide; }
  __device__ static bool load(const Params &p, int index, Task &t) {
    const MqTask m = mq_tasks(p.image)[index];
    const MqRow row = mq_rows(p.image)[m.row];
    t = Task{m.head, row.table_row, m.kv_begin, m.kv_end, m.q_count * p.group, mq_position(row, m.q_begin),
             row.q_offset + m.q_begin, m.slot};
    return true;
  }
  __device__ static int64_t q_token(const Params &p, const Task &t, int r) { return t.first_token + r / p.group; }
  // Unsplit: row r's out row (elements), its lse in natural log; split: its row of the slot (floats).
  __device__ static int64_t output_at(const Params &p, const Task &t, int r, float lse2) {
    if (t.slot >= 0) {
      float *slot = p.partial + t.slot * mq_slot_floats(D);
      slot[mq_slot_lse(D) + r] = lse2;
      return t.slot * mq_slot_floats(D) + (int64_t)r * D;
    }
    const int64_t qo = q_token(p, t, r) * p.num_kv_heads * p.group + (int64_t)t.head * p.group + r % p.group;
    if (p.lse) p.lse[qo] = lse2 * 0.69314718055994530942f;
    return qo * D;
  }
  __device__ static void put(const Params &p, const Task &t, int64_t at, const float (&acc)[8]) {
    if (t.slot >= 0) {
      float4 *dst = reinterpret_cast<float4 *>(p.partial + at);
      dst[0] = make_float4(acc[0], acc[1], acc[2], acc[3]);
      dst[1] = make_float4(acc[4], acc[5], acc[6], acc[7]);
    } else {
      *reinterpret_cast<uint4 *>(static_cast<T *>(p.out) + at) = float_to_vec<T>(acc);
    }
  }
};

template <typename T, int D>
__global__ void __launch_bounds__(WgShape<D>::kThreads, 1) multiquery_wgmma_kernel(MqParams p) {
  wg_run_tasks<MqWgSection<T, D>>(p);
}

}  // namespace pkv
