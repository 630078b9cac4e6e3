// Read bandwidth of the decode kernels' access pattern without their math: is ~94% of the streaming
// probe the ceiling of paged reads, or the kernels' own cost? Reads 2 GiB as 4 KiB chunks (one page of
// one KV head at page size 16, d 128, fp16): sequentially, then K/V chunk pairs in order and in a random
// page order, with 16-byte loads from many blocks, and with bulk copies into a three-stage pipeline of
// 32 KiB stages (the tensor body's shape: 2 blocks per SM, 128 threads, one copy per 2 KiB or per 4 KiB);
// then the shuffled pipeline with each stage held for a while after it lands, as the math holds it.
// Median of 10 launches between CUDA events. Built and run by hand on the GPU machine:
//   nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/gather-probe bench/gather-probe.cu && /tmp/gather-probe
// Results: docs/kernels.md, "Where the remaining gap is".
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "../cuda/src/gpu/decode_vec.cuh"

using namespace pkv;

constexpr size_t kBytes = 2ull << 30, kChunk = 4096;
constexpr int kPairs = (int)(kBytes / kChunk / 2);  // K chunk i of the first half, V chunk i of the second
constexpr int kPairsPerStage = 4;                   // 64 tokens at page size 16: 32 KiB of K and V

__global__ void stream_kernel(const int4 *data, size_t n, int4 *sink) {
  int4 acc = make_int4(0, 0, 0, 0);
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const int4 v = __ldcs(data + i);
    acc.x ^= v.x, acc.y ^= v.y, acc.z ^= v.z, acc.w ^= v.w;
  }
  if (acc.x == 0x7fffffff && acc.y == 0x13579bdf) *sink = acc;
}

// Each block takes a contiguous share of the pair list; thread t reads word t of each chunk, four
// pairs per pass, so every thread has 8 loads in flight.
__global__ void __launch_bounds__(256) gather_loads_kernel(const int4 *data, const int *order, int4 *sink) {
  constexpr int kWords = kChunk / 16;  // 256: one per thread
  const int per = (kPairs + gridDim.x - 1) / gridDim.x, first = blockIdx.x * per, last = min(kPairs, first + per);
  const int4 *v_half = data + (size_t)kPairs * kWords;
  int4 acc = make_int4(0, 0, 0, 0);
  for (int p = first; p < last; p += 4) {
    int4 v[8];
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const size_t c = (size_t)order[min(p + j, last - 1)] * kWords + threadIdx.x;
      v[2 * j] = __ldcs(data + c);
      v[2 * j + 1] = __ldcs(v_half + c);
    }
#pragma unroll
    for (int j = 0; j < 8; j++) acc.x ^= v[j].x, acc.y ^= v[j].y, acc.z ^= v[j].z, acc.w ^= v[j].w;
  }
  if (acc.x == 0x7fffffff && acc.y == 0x13579bdf) *sink = acc;
}

// The decode pipeline without the math: stage s holds 4 K chunks then 4 V chunks; the copy of stage
// i + 2 is issued after every thread has read stage i (a barrier), as the tensor body does.
template <int kCopyBytes>
__global__ void __launch_bounds__(128) gather_bulk_kernel(const char *data, const int *order, int4 *sink, uint64_t *exits, int spin_ns) {
  constexpr int S = 3, kStage = 2 * kPairsPerStage * (int)kChunk;
  extern __shared__ __align__(128) char smem[];
  __shared__ uint64_t bars[S];
  const int stages = kPairs / kPairsPerStage, per = (stages + gridDim.x - 1) / gridDim.x;
  const int first = blockIdx.x * per, count = max(0, min(stages, first + per) - first);
  const char *v_half = data + (size_t)kPairs * kChunk;
  if (threadIdx.x == 0)
    for (int s = 0; s < S; s++) mbar_init(&bars[s], 1);
  fence_async_shared();
  __syncthreads();
  auto issue = [&](int i) {
    if (threadIdx.x != 0 || i >= count) return;
    char *dst = smem + (i % S) * kStage;
    mbar_arrive_expect_tx(&bars[i % S], kStage);
    for (int j = 0; j < kPairsPerStage; j++) {
      const size_t c = (size_t)order[(first + i) * kPairsPerStage + j] * kChunk;
      for (int b = 0; b < (int)kChunk; b += kCopyBytes) {
        bulk_copy_g2s(dst + j * kChunk + b, data + c + b, kCopyBytes, &bars[i % S]);
        bulk_copy_g2s(dst + (kPairsPerStage + j) * kChunk + b, v_half + c + b, kCopyBytes, &bars[i % S]);
      }
    }
  };
  for (int i = 0; i < S - 1; i++) issue(i);
  int acc = 0;
  for (int i = 0; i < count; i++) {
    issue(i + S - 1);
    mbar_wait_parity(&bars[i % S], (unsigned)(i / S) & 1u);
    const int *st = reinterpret_cast<const int *>(smem + (i % S) * kStage);
    for (int w = threadIdx.x; w < kStage / 4; w += 128 * 16) acc ^= st[w];  // touch the stage
    if (spin_ns > 0) {  // stands in for the math on the stage
      uint64_t t0, t;
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
      do asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); while (t - t0 < (uint64_t)spin_ns);
    }
    __syncthreads();
  }
  if (acc == 0x7fffffff) sink->x = acc;
  if (threadIdx.x == 0) {
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    exits[blockIdx.x] = t;
  }
}

template <class Launch>
double gbps(Launch launch, size_t bytes) {
  cudaEvent_t a, b;
  cudaEventCreate(&a), cudaEventCreate(&b);
  std::vector<float> ms;
  launch();
  for (int i = 0; i < 10; i++) {
    float t = 0;
    cudaEventRecord(a);
    launch();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    cudaEventElapsedTime(&t, a, b);
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  return bytes / (ms[ms.size() / 2] * 1e-3) / 1e9;
}

int main() {
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  const int sms = prop.multiProcessorCount;
  char *data;
  int *order;
  int4 *sink;
  uint64_t *exits;
  if (cudaMalloc(&exits, 4096 * sizeof(uint64_t)) != cudaSuccess || cudaMalloc(&data, kBytes) != cudaSuccess || cudaMalloc(&order, kPairs * sizeof(int)) != cudaSuccess ||
      cudaMalloc(&sink, 16) != cudaSuccess) {
    printf("allocation failed\n");
    return 1;
  }
  cudaMemset(data, 0x5a, kBytes);
  std::vector<int> host(kPairs);
  std::iota(host.begin(), host.end(), 0);
  auto check = [](const char *what) {
    const cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) printf("%s: %s\n", what, cudaGetErrorString(e));
  };
  printf("%s, %d SMs, 2 GiB as 4 KiB chunks (K and V pairs), GB/s (median of 10)\n", prop.name, sms);
  const double seq = gbps([&] { stream_kernel<<<sms * 4, 512>>>((const int4 *)data, kBytes / 16, sink); }, kBytes);
  check("stream");
  printf("sequential, 16-byte loads:                 %7.1f  (100%%)\n", seq);
  for (const char *layout : {"in order", "shuffled"}) {
    if (layout[0] == 's') std::shuffle(host.begin(), host.end(), std::mt19937(7));
    cudaMemcpy(order, host.data(), kPairs * sizeof(int), cudaMemcpyHostToDevice);
    const double loads = gbps([&] { gather_loads_kernel<<<sms * 8, 256>>>((const int4 *)data, order, sink); }, kBytes);
    check("loads");
    constexpr int kSmem = 3 * 2 * kPairsPerStage * (int)kChunk;
    cudaFuncSetAttribute(gather_bulk_kernel<2048>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
    cudaFuncSetAttribute(gather_bulk_kernel<4096>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
    const double bulk2 = gbps([&] { gather_bulk_kernel<2048><<<sms * 2, 128, kSmem>>>(data, order, sink, exits, 0); }, kBytes);
    check("bulk 2 KiB");
    const double bulk4 = gbps([&] { gather_bulk_kernel<4096><<<sms * 2, 128, kSmem>>>(data, order, sink, exits, 0); }, kBytes);
    check("bulk 4 KiB");
    printf("pages %s, 16-byte loads, %d blocks:   %7.1f  (%.1f%%)\n", layout, sms * 8, loads, 100 * loads / seq);
    printf("pages %s, bulk copies of 2 KiB, 3 stages: %7.1f  (%.1f%%)\n", layout, bulk2, 100 * bulk2 / seq);
    printf("pages %s, bulk copies of 4 KiB, 3 stages: %7.1f  (%.1f%%)\n", layout, bulk4, 100 * bulk4 / seq);
    // Block exits of the last 4 KiB launch: equal static shares, so their spread is the spread of
    // per-block bandwidth.
    std::vector<uint64_t> t(sms * 2);
    cudaMemcpy(t.data(), exits, t.size() * sizeof(uint64_t), cudaMemcpyDeviceToHost);
    std::sort(t.begin(), t.end());
    auto at = [&](double q) { return (t[(size_t)(q * (t.size() - 1))] - t[0]) / 1000.0; };
    printf("  block exits after the first (us): p10 %.1f, p50 %.1f, p90 %.1f, max %.1f\n", at(0.1), at(0.5), at(0.9), at(1));
  }
  // The shuffled pipeline again with each stage held for a while after it lands, as the math holds it.
  for (int spin : {250, 500, 1000, 1500, 2000, 2500}) {
    constexpr int kSmem = 3 * 2 * kPairsPerStage * (int)kChunk;
    const double bulk = gbps([&] { gather_bulk_kernel<2048><<<sms * 2, 128, kSmem>>>(data, order, sink, exits, spin); }, kBytes);
    check("bulk spin");
    printf("pages shuffled, bulk 2 KiB, stage held %4d ns: %7.1f  (%.1f%%)\n", spin, bulk, 100 * bulk / seq);
  }
  return 0;
}
