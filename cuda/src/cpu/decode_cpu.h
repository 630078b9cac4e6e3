// CPU backend of the decode engine: executes a plan's task list on the host, split by split, with the
// same partial/merge bookkeeping as the kernels (plan_image.h), so CPU-only CI checks the planner,
// splits and merge.
#pragma once
#include <cstdint>

#include "../gpu/decode_launch.h"
#include "persistentkv.h"

namespace pkv {

// p: what a kernel launch reads, with host pointers (on the CPU backend "device" memory is host
// memory) and p.plan the host image; the math runs in the natural-log domain with sm_scale.
void cpu_decode_run(const DecodeParams &p, int32_t head_dim, int32_t dtype, float sm_scale);

struct PlanDelta;
// The CPU backend's counterpart of the GPU's apply-deltas kernel: the plan's validated block-table
// entries into the pool's own table, the only table a CPU run reads.
void cpu_apply_deltas(const PlanDelta *deltas, int32_t n, int32_t *table, int64_t table_stride);

}  // namespace pkv
