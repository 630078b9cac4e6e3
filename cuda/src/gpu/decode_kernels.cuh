// The two decode kernels over a task body (CUDA cores or tensor cores), and their typed launchers.
// Included once per (dtype, head dim) instantiation file.
#pragma once
#include "../core/internal.h"
#include "decode_task_cores.cuh"
#include "decode_task_tensor.cuh"

namespace pkv {

__device__ __forceinline__ const PlanTask *device_tasks(const void *plan) {
  const auto *h = static_cast<const PlanHeader *>(plan);
  return reinterpret_cast<const PlanTask *>(static_cast<const char *>(plan) + 16 * (int64_t)h->tasks_offset);
}

// Baseline ("FlashInfer-style"): one block per task, grid = tasks.
template <class Body, typename T>
__global__ void __launch_bounds__(Body::kThreads) decode_baseline_kernel(const DecodeParams p) {
  extern __shared__ uint4 smem_raw[];
  Body::run(p, device_tasks(p.plan)[blockIdx.x], reinterpret_cast<T *>(smem_raw));
}

// Persistent: a fixed grid takes tasks from the queue (longest first): block i's first task is task i
// (no round trip before its first copy), later ones come by ticket: task grid + ticket. Every block draws
// exactly one ticket past the end, so the draw numbered tasks - 1 is the launch's last (the grid is at
// most the task count): that block resets the counter for the next launch. The task count is read from
// device memory, so a captured graph stays valid for any plan uploaded into the same buffer.
template <class Body, typename T>
__global__ void __launch_bounds__(Body::kThreads) decode_persistent_kernel(const DecodeParams p) {
  extern __shared__ uint4 smem_raw[];
  __shared__ int s_ticket;
  const int num_tasks = static_cast<const PlanHeader *>(p.plan)->num_tasks;
  const PlanTask *tasks = device_tasks(p.plan);
  for (int t = blockIdx.x; t < num_tasks;) {
    Body::run(p, tasks[t], reinterpret_cast<T *>(smem_raw));
    if (threadIdx.x == 0) {
      const int ticket = atomicAdd(p.work_counter, 1);
      if (ticket == num_tasks - 1) atomicExch(p.work_counter, 0);
      s_ticket = ticket;
    }
    __syncthreads();
    t = (int)gridDim.x + s_ticket;
    __syncthreads();
  }
}

// The pipeline's shared memory plus the static words (ticket, last-finisher flag) exceed the default
// 48 KiB limit, so both kernels opt in once per instantiation.
template <class Body, typename T>
pkv_status allow_smem() {
  static const cudaError_t once = [] {
    const int smem = (int)Body::kSmemBytes;
    cudaError_t e = cudaFuncSetAttribute(decode_baseline_kernel<Body, T>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e == cudaSuccess)
      e = cudaFuncSetAttribute(decode_persistent_kernel<Body, T>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    return e;
  }();
  PKV_CUDA_TRY(once);
  return PKV_OK;
}

template <class Body, typename T>
pkv_status launch_body(int32_t kernel, const DecodeParams &p, int32_t grid, cudaStream_t stream) {
  PKV_TRY((allow_smem<Body, T>()));
  if (kernel == PKV_KERNEL_BASELINE)
    decode_baseline_kernel<Body, T><<<grid, Body::kThreads, Body::kSmemBytes, stream>>>(p);
  else
    decode_persistent_kernel<Body, T><<<grid, Body::kThreads, Body::kSmemBytes, stream>>>(p);
  PKV_CUDA_TRY(cudaGetLastError());
  return PKV_OK;
}

template <class Body, typename T>
pkv_status body_blocks_per_sm(int32_t kernel, int32_t *out) {
  PKV_TRY((allow_smem<Body, T>()));
  int n = 0;
  if (kernel == PKV_KERNEL_BASELINE)
    PKV_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, decode_baseline_kernel<Body, T>, Body::kThreads,
                                                               Body::kSmemBytes));
  else
    PKV_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, decode_persistent_kernel<Body, T>, Body::kThreads,
                                                               Body::kSmemBytes));
  *out = n;
  return PKV_OK;
}

template <typename T, int D>
pkv_status launch_decode_typed(int32_t kernel, int32_t math, const DecodeParams &p, int32_t grid, cudaStream_t stream) {
  if constexpr (D <= 128) {
    if (math == kMathTensorCores) return launch_body<TensorBody<T, D, kMathTensorCores>, T>(kernel, p, grid, stream);
    if (math == kMathTensorSmall) return launch_body<TensorBody<T, D, kMathTensorSmall>, T>(kernel, p, grid, stream);
    if (math == kMathTensorBulk) return launch_body<TensorBody<T, D, kMathTensorBulk>, T>(kernel, p, grid, stream);
  }
  return launch_body<CoreBody<T, D>, T>(kernel, p, grid, stream);
}

template <typename T, int D>
pkv_status decode_blocks_per_sm_typed(int32_t kernel, int32_t math, int32_t *out) {
  if constexpr (D <= 128) {
    if (math == kMathTensorCores) return body_blocks_per_sm<TensorBody<T, D, kMathTensorCores>, T>(kernel, out);
    if (math == kMathTensorSmall) return body_blocks_per_sm<TensorBody<T, D, kMathTensorSmall>, T>(kernel, out);
    if (math == kMathTensorBulk) return body_blocks_per_sm<TensorBody<T, D, kMathTensorBulk>, T>(kernel, out);
  }
  return body_blocks_per_sm<CoreBody<T, D>, T>(kernel, out);
}

}  // namespace pkv

// One (dtype, head dim) instantiation per file, so the build compiles them in parallel.
#define PKV_INSTANTIATE_DECODE(T, D) \
  template pkv_status pkv::launch_decode_typed<T, D>(int32_t, int32_t, const pkv::DecodeParams &, int32_t, cudaStream_t); \
  template pkv_status pkv::decode_blocks_per_sm_typed<T, D>(int32_t, int32_t, int32_t *);
