// The tensor-core rate probe's launcher (mma_probe.cu) and the work one launch does.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "persistentkv.h"

namespace pkv {

int64_t mma_probe_flops(int32_t blocks, int32_t iterations);
// `blocks` blocks of 8 warps, `iterations` rounds of mma chains each; `sink` a device float (never written).
pkv_status launch_mma_probe(int32_t dtype, int32_t blocks, int32_t iterations, float *sink, cudaStream_t stream);

}  // namespace pkv
