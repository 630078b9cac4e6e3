// The tensor-core rate probe (pkv_probe_mma_tflops): every warp runs independent chains of
// mma.m16n8k16 on register operands, enough of them in flight to keep the tensor cores busy.
#include "../core/internal.h"
#include "decode_mma.cuh"
#include "mma_probe.h"

namespace pkv {
namespace {

constexpr int kChains = 8;  // independent accumulators per warp: covers the mma latency

template <typename T>
__global__ void __launch_bounds__(256) mma_probe_kernel(int32_t iterations, float *sink) {
  // Operands of 1.0 and small increments: finite sums, whatever the iteration count.
  const uint32_t one = pack2<T>(1.f / 1024, 1.f / 1024);
  uint32_t a[4] = {one, one ^ (threadIdx.x & 1), one, one};
  const uint32_t b0 = one, b1 = one ^ (threadIdx.x & 2);
  float c[kChains][4] = {};
  for (int32_t i = 0; i < iterations; i++)
#pragma unroll
    for (int k = 0; k < kChains; k++) MmaOp<T>::run(c[k], a, b0, b1);
  float sum = 0.f;
#pragma unroll
  for (int k = 0; k < kChains; k++) sum += c[k][0] + c[k][1] + c[k][2] + c[k][3];
  if (sum == -1.f) *sink = sum;  // never true: keeps the loop from being optimised away
}

}  // namespace

int64_t mma_probe_flops(int32_t blocks, int32_t iterations) {
  return (int64_t)blocks * (256 / 32) * iterations * kChains * (16 * 8 * 16 * 2);
}

pkv_status launch_mma_probe(int32_t dtype, int32_t blocks, int32_t iterations, float *sink, cudaStream_t stream) {
  if (dtype == PKV_DTYPE_F16) mma_probe_kernel<__half><<<blocks, 256, 0, stream>>>(iterations, sink);
  else mma_probe_kernel<__nv_bfloat16><<<blocks, 256, 0, stream>>>(iterations, sink);
  PKV_CUDA_TRY(cudaGetLastError());
  return PKV_OK;
}

}  // namespace pkv
