// CUDA queries behind interop (core/interop.cpp): free memory, and what a caller's pointer or stream is.
#include "../core/interop.h"

namespace pkv {

pkv_status gpu_memory_info(int32_t device, uint64_t *free_bytes, uint64_t *total_bytes) {
  // cudaMemGetInfo answers for the current device: make it the runtime's, then put the caller's back.
  int previous = 0;
  PKV_CUDA_TRY(cudaGetDevice(&previous));
  PKV_CUDA_TRY(cudaSetDevice(device));
  size_t free_now = 0, total = 0;
  const cudaError_t e = cudaMemGetInfo(&free_now, &total);
  cudaSetDevice(previous);
  if (e != cudaSuccess) return fail_cuda(e, "cudaMemGetInfo", __FILE__);
  *free_bytes = free_now;
  *total_bytes = total;
  return PKV_OK;
}

pkv_status gpu_check_range(int32_t device, int32_t kind, uint64_t address, uint64_t bytes, const char *what) {
  // Both ends: a range that starts in an allocation but runs past it usually ends outside any (or in
  // host memory). An unknown host address is "unregistered" to CUDA, not an error and not a crash.
  for (const uint64_t at : {address, address + bytes - 1}) {
    cudaPointerAttributes a{};
    const cudaError_t e = cudaPointerGetAttributes(&a, reinterpret_cast<const void *>(static_cast<uintptr_t>(at)));
    if (e != cudaSuccess) {
      cudaGetLastError();
      return fail(PKV_ERR_INVALID_ARGUMENT, "%s: CUDA does not know address 0x%llx (%s)", what,
                  (unsigned long long)at, cudaGetErrorName(e));
    }
    const bool device_memory = a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
    if (kind == PKV_MEM_DEVICE && !(device_memory && a.device == device))
      return fail(PKV_ERR_INVALID_ARGUMENT, "%s: address 0x%llx is not device memory of device %d (%s)", what,
                  (unsigned long long)at, device,
                  device_memory ? "another device's" : a.type == cudaMemoryTypeHost ? "pinned host memory" : "unregistered");
    if (kind == PKV_MEM_PINNED && a.type != cudaMemoryTypeHost)
      return fail(PKV_ERR_INVALID_ARGUMENT, "%s: address 0x%llx is not page-locked host memory", what,
                  (unsigned long long)at);
  }
  return PKV_OK;
}

pkv_status gpu_check_stream(int32_t device, cudaStream_t stream) {
  int owner = -1;
  const cudaError_t e = cudaStreamGetDevice(stream, &owner);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return fail(PKV_ERR_INVALID_ARGUMENT, "0x%llx is not a live CUDA stream (%s)",
                (unsigned long long)(uintptr_t)stream, cudaGetErrorName(e));
  }
  if (owner != device)
    return fail(PKV_ERR_INVALID_ARGUMENT, "the stream belongs to device %d, the runtime to device %d", owner, device);
  return PKV_OK;
}

}  // namespace pkv
