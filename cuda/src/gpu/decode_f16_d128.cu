// Decode kernels for f16 pages with head dim 128.
#include "decode_launchers.cuh"
PKV_INSTANTIATE_DECODE(__half, 128)
