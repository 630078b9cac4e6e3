// The streaming-read kernel behind the bandwidth probe (the ceiling every decode benchmark quotes) and the
// L2 flush; their entry points are in core/probe.cpp.
#include "../core/internal.h"
#include "probe_launch.h"

namespace {

// 16-byte loads, grid-stride; the xor is stored only if impossible so the loads cannot be dropped.
__global__ void read_stream_kernel(const int4 *__restrict__ data, uint64_t n, int4 *sink) {
  int4 acc = make_int4(0, 0, 0, 0);
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x) {
    int4 v = __ldcs(data + i);  // streaming: evict-first, like decode's single pass over K and V
    acc.x ^= v.x;
    acc.y ^= v.y;
    acc.z ^= v.z;
    acc.w ^= v.w;
  }
  if (acc.x == 0x7fffffff && acc.y == 0x13579bdf) *sink = acc;
}

}  // namespace

namespace pkv {

pkv_status launch_read_stream(const void *data, uint64_t bytes, void *sink16, int32_t blocks, cudaStream_t stream) {
  read_stream_kernel<<<blocks, 512, 0, stream>>>(static_cast<const int4 *>(data), bytes / 16,
                                                 static_cast<int4 *>(sink16));
  PKV_CUDA_TRY(cudaGetLastError());
  return PKV_OK;
}

}  // namespace pkv
