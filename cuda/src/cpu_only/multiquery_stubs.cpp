// The multi-query and tensor-core probe GPU entry points for the CPU-only build (see gpu_stubs.cpp): a CPU runtime never
// calls them, and each answers with a status rather than a missing symbol.
#include "../core/internal.h"
#include "../gpu/mma_probe.h"
#include "../gpu/multiquery_launch.h"

namespace pkv {

pkv_status launch_multiquery(int32_t, int32_t, const MqParams &, const MqLaunch &, cudaStream_t) {
  return fail(PKV_ERR_NO_DEVICE, "%s: this library was built without CUDA (zig build -Dgpu=false)", __func__);
}
pkv_status multiquery_wide_blocks_per_sm(int32_t, int32_t, int32_t *) {
  return fail(PKV_ERR_NO_DEVICE, "%s: this library was built without CUDA (zig build -Dgpu=false)", __func__);
}

int64_t mma_probe_flops(int32_t, int32_t) { return 0; }
pkv_status launch_mma_probe(int32_t, int32_t, int32_t, float *, cudaStream_t) {
  return fail(PKV_ERR_NO_DEVICE, "%s: this library was built without CUDA (zig build -Dgpu=false)", __func__);
}

}  // namespace pkv
