// The single dispatch point from run-time (dtype, head dim) to the shared-prefix instantiations, and the
// checks every launch makes first.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../core/internal.h"
#include "../core/shared_image.h"
#include "dispatch_16bit.h"
#include "shared_launch.h"

namespace pkv {

template <typename T, int D>
pkv_status launch_shared_tasks_typed(ShKernel kernel, const ShParams &p, int32_t grid, cudaStream_t stream);
template <typename T, int D>
pkv_status launch_shared_combine_typed(const ShParams &p, int32_t grid, bool overlap, cudaStream_t stream);
template <typename T, int D>
pkv_status shared_blocks_per_sm_typed(ShKernel kernel, int32_t *out);

namespace {

pkv_status no_kernel(const char *what, int32_t dtype, int32_t head_dim) {
  return fail(PKV_ERR_UNSUPPORTED, "%s: dtype %d with head dim %d has no kernel (f16/bf16 x 64/128/256)", what, dtype,
              head_dim);
}

pkv_status check_launch(const char *what, const ShParams &p, int32_t grid) {
  if (grid < 1) return fail(PKV_ERR_INVALID_ARGUMENT, "%s: grid %d is not positive", what, grid);
  if (!p.image || !p.q || !p.out || !p.lse || !p.partial)
    return fail(PKV_ERR_NULL_POINTER, "%s: a null image, q, out, lse or partial pointer", what);
  if (p.group < 1 || p.group > kShTileRows || p.num_kv_heads < 1)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: group %d (1..%d) or %d KV heads out of range", what, p.group, kShTileRows,
                p.num_kv_heads);
  return PKV_OK;
}

}  // namespace

// Returns CALL<T, D>(ARGS...) for the (dtype, head dim) pair, or fails naming WHAT.
#define PKV_SH_DISPATCH(WHAT, CALL, ...)  \
  PKV_DISPATCH_16BIT(CALL, __VA_ARGS__) \
  return no_kernel(WHAT, dtype, head_dim);

pkv_status launch_shared_tasks(int32_t dtype, int32_t head_dim, ShKernel kernel, const ShParams &p, int32_t grid,
                               cudaStream_t stream) {
  PKV_TRY(check_launch("shared tasks", p, grid));
  if (!p.k || !p.v || !p.table) return fail(PKV_ERR_NULL_POINTER, "shared tasks: a null K, V or table pointer");
  if (p.page_shift < 0 || p.page_shift > 8)
    return fail(PKV_ERR_INVALID_ARGUMENT, "shared tasks: page shift %d (pages of 1..256 tokens)", p.page_shift);
  PKV_SH_DISPATCH("shared tasks", launch_shared_tasks_typed, kernel, p, grid, stream);
}

pkv_status launch_shared_combine(int32_t dtype, int32_t head_dim, const ShParams &p, int32_t grid, cudaStream_t stream,
                                 bool overlap) {
  PKV_TRY(check_launch("shared combine", p, grid));
  PKV_SH_DISPATCH("shared combine", launch_shared_combine_typed, p, grid, overlap, stream);
}

pkv_status shared_blocks_per_sm(int32_t dtype, int32_t head_dim, ShKernel kernel, int32_t *out) {
  if (!out) return fail(PKV_ERR_NULL_POINTER, "shared_blocks_per_sm: null out");
  PKV_SH_DISPATCH("shared_blocks_per_sm", shared_blocks_per_sm_typed, kernel, out);
}

#undef PKV_SH_DISPATCH

}  // namespace pkv
