// The shared-prefix GPU entry points for the CPU-only build (see gpu_stubs.cpp): a CPU runtime never
// calls them, and each answers with a status rather than a missing symbol.
#include "../core/internal.h"
#include "../gpu/shared_launch.h"

namespace pkv {

pkv_status launch_shared_tasks(int32_t, int32_t, ShKernel, const ShParams &, int32_t, cudaStream_t) {
  return fail(PKV_ERR_NO_DEVICE, "%s: this library was built without CUDA (zig build -Dgpu=false)", __func__);
}
pkv_status launch_shared_combine(int32_t, int32_t, const ShParams &, int32_t, cudaStream_t, bool) {
  return fail(PKV_ERR_NO_DEVICE, "%s: this library was built without CUDA (zig build -Dgpu=false)", __func__);
}
pkv_status shared_blocks_per_sm(int32_t, int32_t, ShKernel, int32_t *) {
  return fail(PKV_ERR_NO_DEVICE, "%s: this library was built without CUDA (zig build -Dgpu=false)", __func__);
}

}  // namespace pkv
