// Host launchers of the decode kernel for one (dtype, head dim): the task body chosen from the engine's
// DecodeBody (math x loader), the scheduler from the kernel kind. Included once per instantiation file
// (decode_<dtype>_d<head dim>.cu), which PKV_INSTANTIATE_DECODE fills.
#pragma once
#include <atomic>

#include "../core/internal.h"
#include "decode_kernels.cuh"
#include "decode_task_cores.cuh"
#include "decode_task_fp8.cuh"
#include "decode_task_fp8_tensor.cuh"
#include "decode_task_tensor.cuh"
#include "programmatic_launch.h"

namespace pkv {

// The pipeline's shared memory plus the static words (ticket, last-finisher flag) exceed the default
// 48 KiB limit, so both kernels opt in once per instantiation and device: a function's attributes belong
// to the device (context) they were set on, and runtimes on several GPUs launch it on each.
template <class Body, typename T>
pkv_status allow_smem() {
  static std::atomic<uint64_t> opted{0};  // bit d: device d opted in (devices past 63 opt in every call)
  int device = 0;
  PKV_CUDA_TRY(cudaGetDevice(&device));
  const uint64_t bit = device < 64 ? 1ull << device : 0;
  if (bit != 0 && (opted.load(std::memory_order_relaxed) & bit) != 0) return PKV_OK;
  const int smem = (int)Body::kSmemBytes;
  PKV_CUDA_TRY(cudaFuncSetAttribute(decode_kernel<Body, T, SingleTaskScheduler>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  PKV_CUDA_TRY(cudaFuncSetAttribute(decode_kernel<Body, T, TicketScheduler>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  opted.fetch_or(bit, std::memory_order_relaxed);
  return PKV_OK;
}

template <class Body, typename T>
pkv_status launch_body(int32_t kernel, const DecodeParams &p, int32_t grid, bool overlap, cudaStream_t stream) {
  PKV_TRY((allow_smem<Body, T>()));
  auto fn = kernel == PKV_KERNEL_BASELINE ? decode_kernel<Body, T, SingleTaskScheduler> : decode_kernel<Body, T, TicketScheduler>;
  PKV_CUDA_TRY(launch_kernel(overlap, fn, grid, Body::kThreads, Body::kSmemBytes, stream, p));
  return PKV_OK;
}

template <class Body, typename T>
pkv_status body_blocks_per_sm(int32_t kernel, int32_t *out) {
  PKV_TRY((allow_smem<Body, T>()));
  int n = 0;
  if (kernel == PKV_KERNEL_BASELINE)
    PKV_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, decode_kernel<Body, T, SingleTaskScheduler>,
                                                               Body::kThreads, Body::kSmemBytes));
  else
    PKV_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, decode_kernel<Body, T, TicketScheduler>,
                                                               Body::kThreads, Body::kSmemBytes));
  *out = n;
  return PKV_OK;
}

// Calls f with the task body (an empty object; its type is what counts) that `body` selects. T is the
// page dtype: a 16-bit type, or Fp8E4m3<Q> (FP8 pages: bulk copies with tensor cores at head dim 128 only,
// fp8_bulk_support).
template <typename T, int D, class F>
pkv_status with_body(DecodeBody body, F &&f) {
  if constexpr (IsFp8<T>::value) {
    if constexpr (fp8_bulk_support(D))
      if (body.math == PKV_MATH_TENSOR_CORES && body.loader == PKV_LOADER_BULK)
        return f(Fp8TensorBody<typename T::Query, D, true>{});
    if constexpr (tensor_cores_support(D))
      if (body.math == PKV_MATH_TENSOR_CORES) return f(Fp8TensorBody<typename T::Query, D>{});
    return f(Fp8CoreBody<typename T::Query, D>{});
  } else {
    // Plans with rows of several queries take instantiations of their own, so decode plans run the
    // decode rows' code exactly.
    if constexpr (tensor_cores_support(D)) {
      if (body.math == PKV_MATH_TENSOR_CORES && body.loader == PKV_LOADER_BULK)
        return body.queries ? f(TensorBody<T, D, BulkLoad, true>{}) : f(TensorBody<T, D, BulkLoad>{});
      if (body.math == PKV_MATH_TENSOR_CORES)
        return body.queries ? f(TensorBody<T, D, CpAsyncLoad, true>{}) : f(TensorBody<T, D, CpAsyncLoad>{});
    }
    return body.queries ? f(CoreBody<T, D, CpAsyncLoad, true>{}) : f(CoreBody<T, D>{});
  }
}

template <typename T, int D>
pkv_status launch_decode_typed(int32_t kernel, DecodeBody body, const DecodeParams &p, int32_t grid, bool overlap,
                               cudaStream_t stream) {
  return with_body<T, D>(body, [&](auto b) {
    using Body = decltype(b);
    return launch_body<Body, typename Body::Smem>(kernel, p, grid, overlap, stream);
  });
}

template <typename T, int D>
pkv_status decode_blocks_per_sm_typed(int32_t kernel, DecodeBody body, int32_t *out) {
  return with_body<T, D>(body, [&](auto b) {
    using Body = decltype(b);
    return body_blocks_per_sm<Body, typename Body::Smem>(kernel, out);
  });
}

}  // namespace pkv

// One (dtype, head dim) instantiation per file, so the build compiles them in parallel.
#define PKV_INSTANTIATE_DECODE(T, D)                                                                                 \
  template pkv_status pkv::launch_decode_typed<T, D>(int32_t, pkv::DecodeBody, const pkv::DecodeParams &, int32_t, \
                                                     bool, cudaStream_t);                                           \
  template pkv_status pkv::decode_blocks_per_sm_typed<T, D>(int32_t, pkv::DecodeBody, int32_t *);
