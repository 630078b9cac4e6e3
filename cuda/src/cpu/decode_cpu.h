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

}  // namespace pkv
