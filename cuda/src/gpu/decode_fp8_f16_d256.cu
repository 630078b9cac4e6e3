// Decode kernels for FP8 pages with f16 queries and head dim 256.
#include "decode_launchers.cuh"
PKV_INSTANTIATE_DECODE(pkv::Fp8E4m3<__half>, 256)
