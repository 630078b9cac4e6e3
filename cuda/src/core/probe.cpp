// Streaming-read bandwidth probe (the ceiling every decode benchmark quotes) and the L2 flush, for both
// backends; the GPU's read kernel is in gpu/probe.cu.
#include <algorithm>
#include <chrono>
#include <vector>

#include "../gpu/probe_launch.h"
#include "internal.h"

namespace {

pkv_status launch_read(pkv_runtime *rt, const void *data, uint64_t bytes, void *sink16, cudaStream_t stream) {
  return pkv::launch_read_stream(data, bytes, sink16, rt->info.multiprocessors, stream);
}

// Host memory a CPU probe may stream over: half the machine's memory, so that a probe can never push
// the process into the out-of-memory killer (the probe touches every byte it allocates).
uint64_t cpu_probe_limit() { return pkv::host_memory_bytes() / 2; }

double cpu_read_gbps(uint64_t bytes, int32_t iterations) {
  std::vector<uint64_t> data(bytes / 8, 0x9e3779b97f4a7c15ull);
  std::vector<double> gbps;
  volatile uint64_t sink = 0;
  for (int32_t it = 0; it < iterations; it++) {
    auto t0 = std::chrono::steady_clock::now();
    uint64_t acc = 0;
    for (uint64_t w : data) acc ^= w;
    auto t1 = std::chrono::steady_clock::now();
    sink = sink ^ acc;
    gbps.push_back(bytes / std::chrono::duration<double>(t1 - t0).count() / 1e9);
  }
  std::sort(gbps.begin(), gbps.end());
  return gbps[gbps.size() / 2];
}

}  // namespace

extern "C" {

pkv_status pkv_probe_read_bandwidth(pkv_runtime *rt, uint64_t bytes, int32_t iterations, double *gbps) {
  PKV_API_BEGIN
  PKV_CHECK(rt, Runtime);
  PKV_NOT_NULL(gbps);
  if (bytes < (1u << 20) || bytes % 16 != 0)
    return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "pkv_probe_read_bandwidth: size must be a multiple of 16, 1 MiB or more");
  if (iterations < 1 || iterations > 10000)
    return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "pkv_probe_read_bandwidth: iterations %d not in 1..10000", iterations);
  PKV_TRY(pkv::check_not_capturing(rt));
  const uint64_t limit = pkv::on_cuda(rt) ? (uint64_t)rt->info.total_memory : cpu_probe_limit();
  if (bytes > limit)
    return pkv::fail(PKV_ERR_OUT_OF_MEMORY, "pkv_probe_read_bandwidth: %llu bytes exceed the %llu this %s can probe",
                     (unsigned long long)bytes, (unsigned long long)limit, pkv::on_cuda(rt) ? "GPU" : "host");
  if (!pkv::on_cuda(rt)) {
    *gbps = cpu_read_gbps(bytes, iterations);
    return PKV_OK;
  }
  void *data = nullptr, *sink = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  std::vector<float> ms(iterations);
  pkv_status status = pkv::raw_alloc(rt, PKV_MEM_DEVICE, bytes, &data);
  if (status == PKV_OK) status = pkv::raw_alloc(rt, PKV_MEM_DEVICE, 16, &sink);
  auto cuda = [&](cudaError_t e, const char *what) {
    if (status == PKV_OK && e != cudaSuccess) status = pkv::fail_cuda(e, what, "pkv_probe_read_bandwidth");
  };
  cuda(cudaEventCreate(&start), "cudaEventCreate");
  cuda(cudaEventCreate(&stop), "cudaEventCreate");
  if (status == PKV_OK) cuda(cudaMemsetAsync(data, 0x5a, bytes, rt->stream), "cudaMemsetAsync");
  if (status == PKV_OK) status = launch_read(rt, data, bytes, sink, rt->stream);  // warm-up
  for (int32_t it = 0; it < iterations && status == PKV_OK; it++) {
    cuda(cudaEventRecord(start, rt->stream), "cudaEventRecord");
    if (status == PKV_OK) status = launch_read(rt, data, bytes, sink, rt->stream);
    cuda(cudaEventRecord(stop, rt->stream), "cudaEventRecord");
    cuda(cudaEventSynchronize(stop), "cudaEventSynchronize");
    cuda(cudaEventElapsedTime(&ms[it], start, stop), "cudaEventElapsedTime");
  }
  if (start) cudaEventDestroy(start);
  if (stop) cudaEventDestroy(stop);
  pkv::raw_free(rt, PKV_MEM_DEVICE, data);
  pkv::raw_free(rt, PKV_MEM_DEVICE, sink);
  if (status != PKV_OK) return status;
  std::sort(ms.begin(), ms.end());
  *gbps = bytes / (ms[iterations / 2] * 1e-3) / 1e9;
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_flush_l2(pkv_runtime *rt, pkv_stream *stream) {
  PKV_API_BEGIN
  PKV_CHECK(rt, Runtime);
  PKV_TRY(pkv::check_stream(rt, stream, __func__));
  if (!pkv::on_cuda(rt)) return PKV_OK;  // nothing to flush that a benchmark could see
  if (!rt->flush_buffer) {
    PKV_TRY(pkv::check_not_capturing(rt));
    // 256 MiB, as in the peer measurements: several times any L2 so far.
    uint64_t bytes = std::max<uint64_t>(256ull << 20, 4ull * (uint64_t)rt->info.l2_bytes);
    PKV_TRY(pkv::raw_alloc(rt, PKV_MEM_DEVICE, bytes + 16, &rt->flush_buffer));
    PKV_CUDA_TRY(cudaMemsetAsync(rt->flush_buffer, 0x33, bytes + 16, rt->stream));
    rt->flush_bytes = bytes;
  }
  char *base = static_cast<char *>(rt->flush_buffer);
  return pkv::launch_flush_read(base, rt->flush_bytes, base + rt->flush_bytes, rt->info.multiprocessors,
                                pkv::stream_of(rt, stream));
  PKV_API_END
}

}  // extern "C"
