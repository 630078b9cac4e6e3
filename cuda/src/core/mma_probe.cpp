// pkv_probe_mma_tflops: the dense tensor-core rate of this GPU, measured the way the benchmarks time
// kernels (CUDA events, median of the timed launches), so prefill FLOP rates compare with it.
#include <algorithm>
#include <vector>

#include "../gpu/mma_probe.h"
#include "internal.h"

extern "C" pkv_status pkv_probe_mma_tflops(pkv_runtime *rt, int32_t dtype, int32_t iterations, double *tflops) {
  PKV_API_BEGIN
  PKV_CHECK(rt, Runtime);
  PKV_NOT_NULL(tflops);
  if (dtype != PKV_DTYPE_F16 && dtype != PKV_DTYPE_BF16)
    return pkv::fail(PKV_ERR_UNSUPPORTED, "%s: dtype %d is neither F16 (0) nor BF16 (1)", __func__, dtype);
  if (iterations < 1 || iterations > 1000)
    return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: iterations %d is not in 1..1000", __func__, iterations);
  if (!pkv::on_cuda(rt)) return pkv::fail(PKV_ERR_UNSUPPORTED, "%s: the CPU backend has no tensor cores", __func__);
  PKV_TRY(pkv::check_not_capturing(rt));
  const int32_t blocks = 4 * rt->info.multiprocessors, rounds = 16384;  // about a millisecond a launch
  float *sink = nullptr;
  PKV_TRY(pkv::raw_alloc(rt, PKV_MEM_DEVICE, 256, (void **)&sink));
  cudaEvent_t start = nullptr, stop = nullptr;
  pkv_status s = PKV_OK;
  auto cuda = [&](cudaError_t e, const char *what) {
    if (s == PKV_OK && e != cudaSuccess) s = pkv::fail_cuda(e, what, __func__);
  };
  cuda(cudaEventCreate(&start), "cudaEventCreate");
  cuda(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<float> ms;
  for (int32_t i = -1; i < iterations && s == PKV_OK; i++) {  // launch -1 warms up
    cuda(cudaEventRecord(start, rt->stream), "cudaEventRecord");
    if (s == PKV_OK) s = pkv::launch_mma_probe(dtype, blocks, rounds, sink, rt->stream);
    cuda(cudaEventRecord(stop, rt->stream), "cudaEventRecord");
    cuda(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float t = 0.f;
    cuda(cudaEventElapsedTime(&t, start, stop), "cudaEventElapsedTime");
    if (i >= 0) ms.push_back(t);
  }
  if (start) cudaEventDestroy(start);
  if (stop) cudaEventDestroy(stop);
  pkv::raw_free(rt, PKV_MEM_DEVICE, sink);
  if (s != PKV_OK) return s;
  std::sort(ms.begin(), ms.end());
  *tflops = (double)pkv::mma_probe_flops(blocks, rounds) / (ms[ms.size() / 2] * 1e-3) / 1e12;
  return PKV_OK;
  PKV_API_END
}
