// The two decode kernels over the same task body, and their typed launchers. Included once per
// (dtype, head dim) instantiation file.
#pragma once
#include "../core/internal.h"
#include "decode_task.cuh"

namespace pkv {

__device__ __forceinline__ const PlanTask *device_tasks(const void *plan) {
  const auto *h = static_cast<const PlanHeader *>(plan);
  return reinterpret_cast<const PlanTask *>(static_cast<const char *>(plan) + 16 * (int64_t)h->tasks_offset);
}

// Baseline ("FlashInfer-style"): one block per task, grid = tasks.
template <typename T, int D>
__global__ void __launch_bounds__(kDecodeThreads) decode_baseline_kernel(const DecodeParams p) {
  extern __shared__ uint4 smem_raw[];
  run_task<T, D>(p, device_tasks(p.plan)[blockIdx.x], reinterpret_cast<T *>(smem_raw));
}

// Persistent: a fixed grid takes tasks from the queue (longest first) by ticket. Every block draws
// exactly one ticket past the end, so the draw numbered tasks + grid - 1 is the launch's last: that
// block resets the counter for the next launch. The task count is read from device memory, so a
// captured graph stays valid for any plan uploaded into the same buffer.
template <typename T, int D>
__global__ void __launch_bounds__(kDecodeThreads) decode_persistent_kernel(const DecodeParams p) {
  extern __shared__ uint4 smem_raw[];
  __shared__ int s_ticket;
  const int num_tasks = static_cast<const PlanHeader *>(p.plan)->num_tasks;
  const PlanTask *tasks = device_tasks(p.plan);
  for (;;) {
    if (threadIdx.x == 0) {
      int t = atomicAdd(p.work_counter, 1);
      if (t == num_tasks + (int)gridDim.x - 1) atomicExch(p.work_counter, 0);
      s_ticket = t;
    }
    __syncthreads();
    const int t = s_ticket;
    __syncthreads();
    if (t >= num_tasks) break;
    run_task<T, D>(p, tasks[t], reinterpret_cast<T *>(smem_raw));
  }
}

template <typename T, int D>
pkv_status launch_decode_typed(int32_t kernel, const DecodeParams &p, int32_t grid, cudaStream_t stream) {
  const size_t smem = DecodeLayout<T, D>::kSmemBytes;
  if (kernel == PKV_KERNEL_BASELINE) decode_baseline_kernel<T, D><<<grid, kDecodeThreads, smem, stream>>>(p);
  else decode_persistent_kernel<T, D><<<grid, kDecodeThreads, smem, stream>>>(p);
  PKV_CUDA_TRY(cudaGetLastError());
  return PKV_OK;
}

template <typename T, int D>
pkv_status decode_blocks_per_sm_typed(int32_t kernel, int32_t *out) {
  const size_t smem = DecodeLayout<T, D>::kSmemBytes;
  int n = 0;
  if (kernel == PKV_KERNEL_BASELINE)
    PKV_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, decode_baseline_kernel<T, D>, kDecodeThreads, smem));
  else
    PKV_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, decode_persistent_kernel<T, D>, kDecodeThreads, smem));
  *out = n;
  return PKV_OK;
}

}  // namespace pkv

// One (dtype, head dim) instantiation per file, so the build compiles them in parallel.
#define PKV_INSTANTIATE_DECODE(T, D) \
  template pkv_status pkv::launch_decode_typed<T, D>(int32_t, const pkv::DecodeParams &, int32_t, cudaStream_t); \
  template pkv_status pkv::decode_blocks_per_sm_typed<T, D>(int32_t, int32_t *);
