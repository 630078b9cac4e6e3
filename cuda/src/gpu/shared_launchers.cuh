// The typed launchers of the shared-prefix kernels; shared_f16.cu and shared_bf16.cu instantiate them.
#pragma once
#include "../core/internal.h"
#include "shared_combine.cuh"
#include "shared_tasks.cuh"
#include "shared_tasks_wgmma.cuh"
#include "programmatic_launch.h"

namespace pkv {

// Above 48 KiB a kernel's dynamic shared memory needs the opt-in, once per process and instantiation.
template <typename T, int D>
cudaError_t shared_tasks_opt_in() {
  static const cudaError_t opt_in = cudaFuncSetAttribute(
      shared_tasks_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)ShKernelShape<D>::kSmemBytes);
  return opt_in;
}
template <typename T, int D>
cudaError_t shared_tasks_wgmma_opt_in() {
  static const cudaError_t opt_in = cudaFuncSetAttribute(
      shared_tasks_wgmma_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)WgShape<D>::kSmemBytes);
  return opt_in;
}

// Calls f(kernel function, threads, dynamic shared memory) for the kernel that `kernel` names.
template <typename T, int D, class F>
pkv_status with_shared_tasks_kernel(ShKernel kernel, F f) {
  if constexpr (D <= 128) {
    if (kernel == ShKernel::kWarpgroup) {
      PKV_CUDA_TRY((shared_tasks_wgmma_opt_in<T, D>()));
      return f(shared_tasks_wgmma_kernel<T, D>, WgShape<D>::kThreads, WgShape<D>::kSmemBytes);
    }
  }
  PKV_CUDA_TRY((shared_tasks_opt_in<T, D>()));
  return f(shared_tasks_kernel<T, D>, ShKernelShape<D>::kThreads, ShKernelShape<D>::kSmemBytes);
}

template <typename T, int D>
pkv_status launch_shared_tasks_typed(ShKernel kernel, const ShParams &p, int32_t grid, cudaStream_t stream) {
  return with_shared_tasks_kernel<T, D>(kernel, [&](void (*fn)(ShParams), int threads, size_t smem) {
    fn<<<grid, threads, smem, stream>>>(p);
    PKV_CUDA_TRY(cudaGetLastError());
    return PKV_OK;
  });
}

template <typename T, int D>
pkv_status launch_shared_combine_typed(const ShParams &p, int32_t grid, bool overlap, cudaStream_t stream) {
  PKV_CUDA_TRY(launch_kernel(overlap, shared_combine_kernel<T, D>, grid, kShCombineThreads, 0, stream, p));
  return PKV_OK;
}

template <typename T, int D>
pkv_status shared_blocks_per_sm_typed(ShKernel kernel, int32_t *out) {
  return with_shared_tasks_kernel<T, D>(kernel, [&](void (*fn)(ShParams), int threads, size_t smem) {
    PKV_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(out, fn, threads, smem));
    return PKV_OK;
  });
}

}  // namespace pkv

// One dtype's head dims per file, so the build compiles them in parallel.
#define PKV_INSTANTIATE_SHARED(T, D)                                                                           \
  template pkv_status pkv::launch_shared_tasks_typed<T, D>(pkv::ShKernel, const pkv::ShParams &, int32_t, cudaStream_t); \
  template pkv_status pkv::launch_shared_combine_typed<T, D>(const pkv::ShParams &, int32_t, bool, cudaStream_t); \
  template pkv_status pkv::shared_blocks_per_sm_typed<T, D>(pkv::ShKernel, int32_t *);
