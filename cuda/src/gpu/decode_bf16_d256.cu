// Decode kernels for bf16 pages with head dim 256.
#include "decode_launchers.cuh"
PKV_INSTANTIATE_DECODE(__nv_bfloat16, 256)
