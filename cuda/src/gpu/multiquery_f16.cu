// The fp16 instantiations of the multi-query kernels (one file per dtype: builds run in parallel).
#include "multiquery_launchers.cuh"

namespace pkv {
PKV_INSTANTIATE_MULTIQUERY(__half, 64)
PKV_INSTANTIATE_MULTIQUERY(__half, 128)
PKV_INSTANTIATE_MULTIQUERY(__half, 256)
}  // namespace pkv
