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
// which keeps masked V rows finite (0 * NaN garbage would poison the output).
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, int src_bytes) {
  unsigned dst = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

}  // namespace pkv
