// The bf16 instantiations of the multi-query kernels (one file per dtype: builds run in parallel).
#include "multiquery_launchers.cuh"

namespace pkv {
PKV_INSTANTIATE_MULTIQUERY(__nv_bfloat16, 64)
PKV_INSTANTIATE_MULTIQUERY(__nv_bfloat16, 128)
PKV_INSTANTIATE_MULTIQUERY(__nv_bfloat16, 256)
}  // namespace pkv
