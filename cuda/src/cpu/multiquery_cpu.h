// CPU backend of the multi-query section: its tasks and merges on the host, with the kernels'
// bookkeeping (split partials in slots, then one merge per split tile), so CPU tests check the planner.
#pragma once
#include <cstdint>

#include "../gpu/multiquery_launch.h"

namespace pkv {

void cpu_multiquery_run(const MqParams &p, int32_t head_dim, int32_t dtype, float sm_scale);

}  // namespace pkv
