// The typed launchers of the shared-prefix kernels; shared_f16.cu and shared_bf16.cu instantiate them.
#pragma once
#include "../core/internal.h"
#include "shared_combine.cuh"
#include "shared_tasks.cuh"

namespace pkv {

// Above 48 KiB a kernel's dynamic shared memory needs the opt-in, once per process and instantiation.
template <typename T, int D>
cudaError_t shared_tasks_opt_in() {
  static const cudaError_t opt_in = cudaFuncSetAttribute(
      shared_tasks_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)ShKernelShape<D>::kSmemBytes);
  return opt_in;
}

template <typename T, int D>
pkv_status launch_shared_tasks_typed(const ShParams &p, int32_t grid, cudaStream_t stream) {
  using S = ShKernelShape<D>;
  PKV_CUDA_TRY((shared_tasks_opt_in<T, D>()));
  shared_tasks_kernel<T, D><<<grid, S::kThreads, S::kSmemBytes, stream>>>(p);
  PKV_CUDA_TRY(cudaGetLastError());
  return PKV_OK;
}

template <typename T, int D>
pkv_status launch_shared_combine_typed(const ShParams &p, int32_t grid, cudaStream_t stream) {
  shared_combine_kernel<T, D><<<grid, 128, 0, stream>>>(p);
  PKV_CUDA_TRY(cudaGetLastError());
  return PKV_OK;
}

template <typename T, int D>
pkv_status shared_blocks_per_sm_typed(int32_t *out) {
  using S = ShKernelShape<D>;
  PKV_CUDA_TRY((shared_tasks_opt_in<T, D>()));
  PKV_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(out, shared_tasks_kernel<T, D>, S::kThreads, S::kSmemBytes));
  return PKV_OK;
}

}  // namespace pkv

// One dtype's head dims per file, so the build compiles them in parallel.
#define PKV_INSTANTIATE_SHARED(T, D)                                                                           \
  template pkv_status pkv::launch_shared_tasks_typed<T, D>(const pkv::ShParams &, int32_t, cudaStream_t);   \
  template pkv_status pkv::launch_shared_combine_typed<T, D>(const pkv::ShParams &, int32_t, cudaStream_t); \
  template pkv_status pkv::shared_blocks_per_sm_typed<T, D>(int32_t *);
