// Decode kernels for FP8 pages with bf16 queries and head dim 64.
#include "decode_launchers.cuh"
PKV_INSTANTIATE_DECODE(pkv::Fp8E4m3<__nv_bfloat16>, 64)
