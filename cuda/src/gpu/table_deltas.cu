// Block-table deltas: each plan carries the table entries added since the last upload (PlanDelta) in
// its image, and this kernel writes them into the device table before the step's runs read it.
#include "table_deltas.h"

#include "../core/internal.h"
#include "../core/plan_image.h"

namespace pkv {
namespace {

__global__ void apply_deltas_kernel(const PlanDelta *deltas, int32_t n, int32_t *table, int64_t stride) {
  for (int32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    PlanDelta d = deltas[i];
    table[(int64_t)d.table_row * stride + d.column] = d.page;
  }
}

}  // namespace

pkv_status launch_apply_deltas(const void *deltas, int32_t num_deltas, int32_t *table, int64_t table_stride,
                               cudaStream_t stream) {
  if (num_deltas <= 0) return PKV_OK;
  int blocks = (num_deltas + 255) / 256;
  if (blocks > 1024) blocks = 1024;
  apply_deltas_kernel<<<blocks, 256, 0, stream>>>(static_cast<const PlanDelta *>(deltas), num_deltas, table,
                                                  table_stride);
  PKV_CUDA_TRY(cudaGetLastError());
  return PKV_OK;
}

}  // namespace pkv
