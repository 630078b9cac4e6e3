// Placeholder for the shared-prefix kernels while they are written on another branch: the engine links
// against these entry points. Each answers PKV_ERR_UNSUPPORTED, so a CUDA engine shares nothing (AUTO)
// and refuses ALWAYS. Delete this file when the kernels' branch (cuda/src/gpu/shared_*.cu) is merged.
#include "../core/internal.h"
#include "shared_launch.h"

namespace pkv {

pkv_status launch_shared_tasks(int32_t, int32_t, const ShParams &, int32_t, cudaStream_t) {
  return fail(PKV_ERR_UNSUPPORTED, "%s: the shared-prefix kernels are not built in", __func__);
}
pkv_status launch_shared_combine(int32_t, int32_t, const ShParams &, int32_t, cudaStream_t) {
  return fail(PKV_ERR_UNSUPPORTED, "%s: the shared-prefix kernels are not built in", __func__);
}
pkv_status shared_blocks_per_sm(int32_t, int32_t, int32_t *) {
  return fail(PKV_ERR_UNSUPPORTED, "%s: the shared-prefix kernels are not built in", __func__);
}

}  // namespace pkv
