// The single dispatch point from run-time (dtype, head dim) to the multi-query instantiations.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../core/internal.h"
#include "dispatch_16bit.h"
#include "multiquery_launch.h"

namespace pkv {

template <typename T, int D>
pkv_status launch_multiquery_typed(const MqParams &p, const MqLaunch &counts, cudaStream_t stream);
template <typename T, int D>
pkv_status multiquery_wide_blocks_per_sm_typed(int32_t *out);

// Returns CALL<T, D>(ARGS...) for the (dtype, head dim) pair, or fails naming WHAT.
#define PKV_MQ_DISPATCH(WHAT, CALL, ...)                                                                      \
  PKV_DISPATCH_16BIT(CALL, __VA_ARGS__)                                                                     \
  return fail(PKV_ERR_UNSUPPORTED, "%s: dtype %d with head dim %d has no kernel (f16/bf16 x 64/128/256)", WHAT, \
              dtype, head_dim);

pkv_status launch_multiquery(int32_t dtype, int32_t head_dim, const MqParams &p, const MqLaunch &counts,
                             cudaStream_t stream) {
  if (counts.num_wide < 0 || counts.num_wide > counts.num_tasks || (counts.num_wide > 0 && counts.wide_grid < 1))
    return fail(PKV_ERR_INTERNAL, "multiquery: %d wide tasks of %d on a grid of %d", counts.num_wide, counts.num_tasks,
                counts.wide_grid);
  PKV_MQ_DISPATCH("multiquery", launch_multiquery_typed, p, counts, stream);
}

pkv_status multiquery_wide_blocks_per_sm(int32_t dtype, int32_t head_dim, int32_t *out) {
  if (!out) return fail(PKV_ERR_NULL_POINTER, "multiquery_wide_blocks_per_sm: null out");
  PKV_MQ_DISPATCH("multiquery_wide_blocks_per_sm", multiquery_wide_blocks_per_sm_typed, out);
}

#undef PKV_MQ_DISPATCH

}  // namespace pkv
