// Host-side entry points of the multi-query kernels (plain C++ for engine code), and what a launch reads.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "persistentkv.h"

namespace pkv {

// Everything a multi-query run reads; the CPU executor (multiquery_cpu.h) reads the same block with host
// memory. `image` is the plan's multi-query section (multiquery_image.h).
struct MqParams {
  const void *k;  // this layer's K pages, HND
  const void *v;
  const int32_t *table;
  int64_t table_stride;
  const void *image;
  const void *q;  // [query tokens][Hq][d]
  void *out;
  float *lse;       // [query tokens][Hq], natural log; may be null
  float *partial;   // split tasks' slots, mq_slot_floats(head_dim) each
  int32_t num_kv_heads;
  int32_t group;
  int32_t page_shift;
  float scale_log2;  // sm_scale * log2(e)
  int32_t first_task;  // the narrow kernel's block b runs task first_task + b (the launcher sets it)
};

// The section's counts, from the host copy of its header.
struct MqLaunch {
  int32_t num_tasks, num_wide, wide_grid, num_merges;
};
// The wide tasks (a persistent grid of warpgroup blocks, sm_90a), the narrow ones (a block each), then
// the merges of split tiles (a block each).
pkv_status launch_multiquery(int32_t dtype, int32_t head_dim, const MqParams &p, const MqLaunch &counts,
                             cudaStream_t stream);
// Whether this device and head dim have the wide kernel (the planner makes wide tiles only then): the
// library's Hopper code is sm_90a, which runs on compute capability 9.0 only.
inline bool multiquery_has_wide(int32_t cc_major, int32_t cc_minor, int32_t head_dim) {
  return cc_major == 9 && cc_minor == 0 && head_dim <= 128;
}
// Resident blocks of the wide kernel per multiprocessor.
pkv_status multiquery_wide_blocks_per_sm(int32_t dtype, int32_t head_dim, int32_t *out);

}  // namespace pkv
