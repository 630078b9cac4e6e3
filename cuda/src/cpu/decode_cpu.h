// CPU backend of the decode engine: executes a plan's task list on the host, split by split, with the
// same partial/merge bookkeeping as the kernels, so CPU-only CI checks the planner, splits and merge.
#pragma once
#include <cstdint>

#include "persistentkv.h"

namespace pkv {

struct CpuDecodeArgs {
  const void *plan;  // the plan image (host)
  const void *k;     // this layer's pages
  const void *v;
  const int32_t *table;
  int64_t table_stride;
  int32_t num_kv_heads, group, head_dim, page_size, dtype;
  float sm_scale;
  const void *q;
  void *out;
  float *lse;  // may be null
  float *partial_o;
  float *partial_lse;
  unsigned long long *merge_counters;  // per (row, head): splits counted << 32 | splits (or a claiming row's tiles) done
  int32_t *slot_counters;   // per (row, head): partial slots a claiming row's splits took
};

void cpu_decode_run(const CpuDecodeArgs &a);

struct PlanDelta;
// The CPU backend's counterpart of the GPU's apply-deltas kernel: the plan's validated block-table
// entries into the pool's own table, the only table a CPU run reads.
void cpu_apply_deltas(const PlanDelta *deltas, int32_t n, int32_t *table, int64_t table_stride);

}  // namespace pkv
