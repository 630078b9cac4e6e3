// Moves the decode rows of a mixed step between the step's query tokens and the contiguous rows the
// decode kernels read and write (multiquery_launch.h).
#include "../core/internal.h"
#include "multiquery_launch.h"

namespace pkv {
namespace {

// One block per row, 4-byte words (an lse row is num_qo_heads floats, not always 16-byte sized).
__global__ void move_rows_kernel(const uint32_t *src, uint32_t *dst, const int32_t *tokens, int64_t words, bool gather) {
  const int64_t i = blockIdx.x, token = tokens[i];
  const uint32_t *from = src + (gather ? token : i) * words;
  uint32_t *to = dst + (gather ? i : token) * words;
  for (int64_t w = threadIdx.x; w < words; w += blockDim.x) to[w] = from[w];
}

}  // namespace

pkv_status launch_move_rows(const void *src, void *dst, const int32_t *tokens, int32_t n, int64_t row_bytes, bool gather,
                            cudaStream_t stream) {
  if (n <= 0) return PKV_OK;
  move_rows_kernel<<<n, 256, 0, stream>>>(static_cast<const uint32_t *>(src), static_cast<uint32_t *>(dst), tokens,
                                          row_bytes / 4, gather);
  PKV_CUDA_TRY(cudaGetLastError());
  return PKV_OK;
}

}  // namespace pkv
