// The f16 instantiations of the shared-prefix kernels (one file per dtype: builds run in parallel).
#include "shared_launchers.cuh"

PKV_INSTANTIATE_SHARED(__half, 64)
PKV_INSTANTIATE_SHARED(__half, 128)
PKV_INSTANTIATE_SHARED(__half, 256)
