// The typed launcher of the multi-query kernels: the tasks, then the merges of split tiles.
#pragma once
#include "../core/internal.h"
#include "multiquery_kernel.cuh"
#include "multiquery_merge.cuh"

namespace pkv {

template <typename T, int D>
pkv_status launch_multiquery_typed(const MqParams &p, int32_t num_tasks, int32_t num_merges, cudaStream_t stream) {
  using S = MqKernelShape<D>;
  // Above 48 KiB a kernel's dynamic shared memory needs the opt-in, once per process and instantiation.
  static const cudaError_t opt_in =
      cudaFuncSetAttribute(multiquery_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)S::kSmemBytes);
  PKV_CUDA_TRY(opt_in);
  if (num_tasks > 0) multiquery_kernel<T, D><<<num_tasks, S::kThreads, S::kSmemBytes, stream>>>(p);
  PKV_CUDA_TRY(cudaGetLastError());
  if (num_merges > 0) multiquery_merge_kernel<T, D><<<num_merges, 128, 0, stream>>>(p);
  PKV_CUDA_TRY(cudaGetLastError());
  return PKV_OK;
}

#define PKV_INSTANTIATE_MULTIQUERY(T, D) \
  template pkv_status launch_multiquery_typed<T, D>(const MqParams &, int32_t, int32_t, cudaStream_t);

}  // namespace pkv
