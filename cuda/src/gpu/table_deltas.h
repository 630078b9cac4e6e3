// The block-table delta kernel's launcher: a plan's new block-table entries into the device table.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "persistentkv.h"

namespace pkv {

// Writes block-table deltas (device address of the plan's PlanDelta array) into the device table.
pkv_status launch_apply_deltas(const void *deltas, int32_t num_deltas, int32_t *table, int64_t table_stride,
                               cudaStream_t stream);

}  // namespace pkv
