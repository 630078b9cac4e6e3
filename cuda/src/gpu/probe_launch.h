// Host-side entry point of the streaming-read kernel (gpu/probe.cu), shared by the bandwidth probe and the
// L2 flush (core/probe.cpp).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "persistentkv.h"

namespace pkv {

// Reads `bytes` (a multiple of 16) from device memory with 16-byte loads, sized to fill `multiprocessors`.
pkv_status launch_read_stream(const void *data, uint64_t bytes, void *sink16, int32_t multiprocessors,
                              cudaStream_t stream);
// The L2 flush's read: evict-first 16-byte loads over `bytes`.
pkv_status launch_flush_read(const void *data, uint64_t bytes, void *sink16, int32_t multiprocessors,
                             cudaStream_t stream);

}  // namespace pkv
