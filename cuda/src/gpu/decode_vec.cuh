// 16-byte vectors of 8 fp16/bf16 elements: conversion to and from fp32, and the cp.async primitives.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace pkv {

template <typename T> struct Pair;
template <> struct Pair<__half> {
  using type = __half2;
  static __device__ __forceinline__ float2 to_float2(type v) { return __half22float2(v); }
  static __device__ __forceinline__ type from_float2(float a, float b) { return __floats2half2_rn(a, b); }
};
template <> struct Pair<__nv_bfloat16> {
  using type = __nv_bfloat162;
  static __device__ __forceinline__ float2 to_float2(type v) { return __bfloat1622float2(v); }
  static __device__ __forceinline__ type from_float2(float a, float b) { return __floats2bfloat162_rn(a, b); }
};

template <typename T>
__device__ __forceinline__ void vec_to_float(const uint4 &raw, float (&f)[8]) {
  const auto *p = reinterpret_cast<const typename Pair<T>::type *>(&raw);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    float2 v = Pair<T>::to_float2(p[i]);
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}

template <typename T>
__device__ __forceinline__ uint4 float_to_vec(const float (&f)[8]) {
  uint4 raw;
  auto *p = reinterpret_cast<typename Pair<T>::type *>(&raw);
#pragma unroll
  for (int i = 0; i < 4; i++) p[i] = Pair<T>::from_float2(f[2 * i], f[2 * i + 1]);
  return raw;
}

// 16-byte global->shared copy that bypasses L1 (each byte is read once); src_bytes 0 writes zeros,
// which keeps masked V rows finite (0 * NaN garbage would poison the output). L2::128B asks L2 to
// fetch the whole 128-byte line on a miss: the neighbouring lanes' requests then hit instead of each
// sending its own 32-byte sector read to DRAM.
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, int src_bytes) {
  unsigned dst = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Hopper bulk copies (sm_90+): one thread moves `bytes` (a multiple of 16, both addresses 16-byte
// aligned) global->shared; completion is counted in bytes on an mbarrier of this CTA.
__device__ __forceinline__ void mbar_init(uint64_t *bar, unsigned count) {
#if __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"((unsigned)__cvta_generic_to_shared(bar)), "r"(count));
#endif
}
__device__ __forceinline__ void mbar_inval(uint64_t *bar) {
#if __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.inval.shared::cta.b64 [%0];\n" ::"r"((unsigned)__cvta_generic_to_shared(bar)));
#endif
}
// Makes the barrier inits (and this thread's earlier ordinary shared-memory writes) visible to the copy engine.
__device__ __forceinline__ void fence_async_shared() {
#if __CUDA_ARCH__ >= 900
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t *bar, unsigned bytes) {
#if __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"((unsigned)__cvta_generic_to_shared(bar)),
               "r"(bytes) : "memory");
#endif
}
__device__ __forceinline__ void mbar_wait_parity(uint64_t *bar, unsigned parity) {
#if __CUDA_ARCH__ >= 900
  asm volatile(
      "{\n .reg .pred p;\n LAB_WAIT:\n"
      " mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      " @!p bra LAB_WAIT;\n}\n" ::"r"((unsigned)__cvta_generic_to_shared(bar)),
      "r"(parity) : "memory");
#endif
}
// Programmatic dependent launch (sm_90+): a grid launched with it may start while the grid before it in
// the stream still runs. launch_dependents lets the next such grid start once every block of this one
// has called it; wait blocks until the grid before has completed and its writes are visible. Both are
// no-ops in a launch without it.
__device__ __forceinline__ void grid_launch_dependents() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void grid_dependency_wait() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void bulk_copy_g2s(void *smem, const void *gmem, unsigned bytes, uint64_t *bar) {
#if __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   (unsigned)__cvta_generic_to_shared(smem)),
               "l"(gmem), "r"(bytes), "r"((unsigned)__cvta_generic_to_shared(bar)) : "memory");
#else
  __trap();
#endif
}

}  // namespace pkv
