// What interop needs from CUDA: device memory figures and checks that a caller's address or stream
// belongs to the runtime's device. gpu/interop.cu implements them; the CPU-only build answers "no device".
#pragma once
#include "internal.h"

namespace pkv {

pkv_status gpu_memory_info(int32_t device, uint64_t *free_bytes, uint64_t *total_bytes);
// Both ends of [address, address + bytes) lie in memory of `kind` that `device` can use: its device
// memory (PKV_MEM_DEVICE) or page-locked host memory (PKV_MEM_PINNED). `what` names the range.
pkv_status gpu_check_range(int32_t device, int32_t kind, uint64_t address, uint64_t bytes, const char *what);
// `stream` is a live stream of `device`.
pkv_status gpu_check_stream(int32_t device, cudaStream_t stream);

}  // namespace pkv
