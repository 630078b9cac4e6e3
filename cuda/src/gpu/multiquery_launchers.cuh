// The typed launcher of the multi-query kernels: the wide tasks, the narrow ones, then the merges of
// split tiles.
#pragma once
#include "../core/internal.h"
#include "multiquery_kernel.cuh"
#include "multiquery_merge.cuh"
#include "multiquery_wgmma.cuh"

namespace pkv {

// Above 48 KiB a kernel's dynamic shared memory needs the opt-in, once per process and instantiation.
template <typename T, int D>
cudaError_t multiquery_wide_opt_in() {
  static const cudaError_t opt_in = cudaFuncSetAttribute(
      multiquery_wgmma_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)WgShape<D>::kSmemBytes);
  return opt_in;
}

template <typename T, int D>
pkv_status launch_multiquery_typed(const MqParams &p, const MqLaunch &n, cudaStream_t stream) {
  using S = MqKernelShape<D>;
  static const cudaError_t opt_in =
      cudaFuncSetAttribute(multiquery_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)S::kSmemBytes);
  PKV_CUDA_TRY(opt_in);
  if (n.num_wide > 0) {
    if constexpr (D <= 128) {
      PKV_CUDA_TRY((multiquery_wide_opt_in<T, D>()));
      multiquery_wgmma_kernel<T, D><<<n.wide_grid, WgShape<D>::kThreads, WgShape<D>::kSmemBytes, stream>>>(p);
      PKV_CUDA_TRY(cudaGetLastError());
    } else {
      return fail(PKV_ERR_INTERNAL, "multiquery: wide tiles at head dim %d, which has no wide kernel", D);
    }
  }
  MqParams narrow = p;
  narrow.first_task = n.num_wide;
  if (n.num_tasks > n.num_wide)
    multiquery_kernel<T, D><<<n.num_tasks - n.num_wide, S::kThreads, S::kSmemBytes, stream>>>(narrow);
  PKV_CUDA_TRY(cudaGetLastError());
  if (n.num_merges > 0) multiquery_merge_kernel<T, D><<<n.num_merges, 128, 0, stream>>>(p);
  PKV_CUDA_TRY(cudaGetLastError());
  return PKV_OK;
}

template <typename T, int D>
pkv_status multiquery_wide_blocks_per_sm_typed(int32_t *out) {
  if constexpr (D <= 128) {
    PKV_CUDA_TRY((multiquery_wide_opt_in<T, D>()));
    PKV_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(out, multiquery_wgmma_kernel<T, D>, WgShape<D>::kThreads,
                                                               WgShape<D>::kSmemBytes));
    return PKV_OK;
  } else {
    *out = 0;
    return PKV_OK;
  }
}

#define PKV_INSTANTIATE_MULTIQUERY(T, D)                                                                    \
  template pkv_status launch_multiquery_typed<T, D>(const MqParams &, const MqLaunch &, cudaStream_t); \
  template pkv_status multiquery_wide_blocks_per_sm_typed<T, D>(int32_t *);

}  // namespace pkv
