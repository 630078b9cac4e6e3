// Returns CALL<T, D>(ARGS...) where the run-time (dtype, head_dim) in scope is one of the 16-bit
// instantiations (f16/bf16 x head dims 64, 128, 256), else falls through to the caller's refusal.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "persistentkv.h"

#define PKV_DISPATCH_16BIT(CALL, ...)                                                             \
  {                                                                                               \
    const bool pkv_f16_ = dtype == PKV_DTYPE_F16, pkv_bf16_ = dtype == PKV_DTYPE_BF16;            \
    if (pkv_f16_ && head_dim == 64) return CALL<__half, 64>(__VA_ARGS__);                         \
    if (pkv_f16_ && head_dim == 128) return CALL<__half, 128>(__VA_ARGS__);                       \
    if (pkv_f16_ && head_dim == 256) return CALL<__half, 256>(__VA_ARGS__);                       \
    if (pkv_bf16_ && head_dim == 64) return CALL<__nv_bfloat16, 64>(__VA_ARGS__);                 \
    if (pkv_bf16_ && head_dim == 128) return CALL<__nv_bfloat16, 128>(__VA_ARGS__);               \
    if (pkv_bf16_ && head_dim == 256) return CALL<__nv_bfloat16, 256>(__VA_ARGS__);               \
  }
