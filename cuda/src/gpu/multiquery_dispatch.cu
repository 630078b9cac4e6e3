// The single dispatch point from run-time (dtype, head dim) to the multi-query instantiations.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../core/internal.h"
#include "multiquery_launch.h"

namespace pkv {

template <typename T, int D>
pkv_status launch_multiquery_typed(const MqParams &p, int32_t num_tasks, int32_t num_merges, cudaStream_t stream);

pkv_status launch_multiquery(int32_t dtype, int32_t head_dim, const MqParams &p, int32_t num_tasks, int32_t num_merges,
                             cudaStream_t stream) {
#define PKV_MQ_CASE(T, D) \
  if (head_dim == D) return launch_multiquery_typed<T, D>(p, num_tasks, num_merges, stream);
  if (dtype == PKV_DTYPE_F16) {
    PKV_MQ_CASE(__half, 64)
    PKV_MQ_CASE(__half, 128)
    PKV_MQ_CASE(__half, 256)
  } else if (dtype == PKV_DTYPE_BF16) {
    PKV_MQ_CASE(__nv_bfloat16, 64)
    PKV_MQ_CASE(__nv_bfloat16, 128)
    PKV_MQ_CASE(__nv_bfloat16, 256)
  }
#undef PKV_MQ_CASE
  return fail(PKV_ERR_UNSUPPORTED, "multiquery: dtype %d with head dim %d has no kernel (f16/bf16 x 64/128/256)", dtype,
              head_dim);
}

}  // namespace pkv
