// The shared-prefix tasks (shared_image.h) on Hopper's warpgroup MMAs (wgmma_tasks.cuh): the same tasks
// and partials as shared_tasks.cuh. Task row r is query head r % group of member r / group; every token
// of the range is visible to every row.
#pragma once
#include "../core/shared_image.h"
#include "shared_launch.h"
#include "wgmma_tasks.cuh"

namespace pkv {

static_assert(kShTileRows == kWgTaskRows, "a shared task fills the warpgroup kernel's rows");

template <typename T, int D>
struct ShWgSection {
  using Params = ShParams;
  using Elem = T;
  static constexpr int kHeadDim = D;
  static constexpr bool kCausal = false;
  struct Task {
    int32_t head, table_row, kv_begin, kv_end, rows, first_pos;
    int32_t member_first, piece;
  };
  __device__ static int num_tasks(const Params &p) { return sh_header(p.image).num_tasks; }
  __device__ static bool load(const Params &p, int index, Task &t) {
    const ShTask s = sh_tasks(p.image)[index];
    t = Task{s.head, s.table_row, s.kv_begin, s.kv_end, s.member_count * p.group, 0, s.member_first, s.piece};
    return true;
  }
  __device__ static int64_t q_token(const Params &p, const Task &t, int r) {
    return sh_members(p.image)[t.member_first + r / p.group].row;
  }
  // Row r's outputs: its member's slot of (piece, head), query head r % group's D floats.
  __device__ static int64_t output_at(const Params &p, const Task &t, int r, float lse2) {
    const int g = p.group;
    const int64_t slot_floats = sh_slot_floats(g, D);
    const int64_t slot = sh_members(p.image)[t.member_first + r / g].slot_base + (int64_t)t.piece * p.num_kv_heads + t.head;
    p.partial[slot * slot_floats + (int64_t)g * D + r % g] = lse2;
    return slot * slot_floats + (int64_t)(r % g) * D;
  }
  // Slots are a multiple of 4 floats (sh_slot_floats), so 8 columns are two aligned float4 stores.
  __device__ static void put(const Params &p, const Task &, int64_t at, const float (&acc)[8]) {
    float4 *dst = reinterpret_cast<float4 *>(p.partial + at);
    dst[0] = make_float4(acc[0], acc[1], acc[2], acc[3]);
    dst[1] = make_float4(acc[4], acc[5], acc[6], acc[7]);
  }
};

template <typename T, int D>
__global__ void __launch_bounds__(WgShape<D>::kThreads, 1) shared_tasks_wgmma_kernel(ShParams p) {
  grid_launch_dependents();  // the step's decode kernel needs nothing of ours: it may take free SMs now
  wg_run_tasks<ShWgSection<T, D>>(p);
}

}  // namespace pkv
