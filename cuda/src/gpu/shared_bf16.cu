// The bf16 instantiations of the shared-prefix kernels (one file per dtype: builds run in parallel).
#include "shared_launchers.cuh"

PKV_INSTANTIATE_SHARED(__nv_bfloat16, 64)
PKV_INSTANTIATE_SHARED(__nv_bfloat16, 128)
PKV_INSTANTIATE_SHARED(__nv_bfloat16, 256)
