// The streaming-read ceiling: which read kernel moves 2 GiB fastest on this GPU? Every "% of ceiling"
// figure divides by the best configuration found here, so the search covers what decides it: the grid
// (blocks per SM), the block size, the 16-byte loads each thread keeps in flight (unrolling), the cache
// hint, and the order of work (grid-stride over the whole buffer, or one contiguous chunk per block).
// Median of 20 launches between CUDA events after two warm-ups; the buffer is 2 GiB (34x the H200's L2).
// Built and run by hand on the GPU machine:
//   nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/read-ceiling bench/read-ceiling.cu && /tmp/read-ceiling
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#define CHECK(call)                                                                   \
  do {                                                                                \
    cudaError_t e_ = (call);                                                          \
    if (e_ != cudaSuccess) {                                                          \
      fprintf(stderr, "%s failed: %s (%s:%d)\n", #call, cudaGetErrorString(e_), __FILE__, __LINE__); \
      exit(1);                                                                        \
    }                                                                                 \
  } while (0)

enum Hint { kStreaming, kReadOnly, kNoAllocate };
static const char *hint_name[] = {"ldcs", "ldg", "nc.no_allocate"};

template <Hint H>
__device__ __forceinline__ int4 load(const int4 *p) {
  if constexpr (H == kStreaming) return __ldcs(p);
  if constexpr (H == kReadOnly) return __ldg(p);
  int4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.s32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

__device__ __forceinline__ void fold(int4 &acc, int4 v) { acc.x ^= v.x, acc.y ^= v.y, acc.z ^= v.z, acc.w ^= v.w; }

// Grid-stride: a warp's U loads of a pass are U x 512 contiguous bytes apart by the grid's stride.
template <Hint H, int U>
__global__ void grid_stride(const int4 *__restrict__ data, size_t n, int4 *sink) {
  int4 acc = make_int4(0, 0, 0, 0);
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  for (; i + (U - 1) * stride < n; i += U * stride) {
    int4 v[U];
#pragma unroll
    for (int u = 0; u < U; u++) v[u] = load<H>(data + i + u * stride);
#pragma unroll
    for (int u = 0; u < U; u++) fold(acc, v[u]);
  }
  for (; i < n; i += stride) fold(acc, load<H>(data + i));
  if (acc.x == 0x7fffffff && acc.y == 0x13579bdf) *sink = acc;
}

// One contiguous chunk per block, walked by the block U x blockDim words at a time.
template <Hint H, int U>
__global__ void chunked(const int4 *__restrict__ data, size_t n, int4 *sink) {
  int4 acc = make_int4(0, 0, 0, 0);
  const size_t per = (n + gridDim.x - 1) / gridDim.x, begin = blockIdx.x * per, end = min(n, begin + per);
  size_t i = begin + threadIdx.x;
  for (; i + (U - 1) * blockDim.x < end; i += U * blockDim.x) {
    int4 v[U];
#pragma unroll
    for (int u = 0; u < U; u++) v[u] = load<H>(data + i + u * blockDim.x);
#pragma unroll
    for (int u = 0; u < U; u++) fold(acc, v[u]);
  }
  for (; i < end; i += blockDim.x) fold(acc, load<H>(data + i));
  if (acc.x == 0x7fffffff && acc.y == 0x13579bdf) *sink = acc;
}

using Kernel = void (*)(const int4 *, size_t, int4 *);
struct Variant {
  const char *order;
  Hint hint;
  int unroll;
  Kernel kernel;
};

template <Hint H>
void add_hint(std::vector<Variant> &v) {
  v.push_back({"grid-stride", H, 1, grid_stride<H, 1>});
  v.push_back({"grid-stride", H, 2, grid_stride<H, 2>});
  v.push_back({"grid-stride", H, 4, grid_stride<H, 4>});
  v.push_back({"grid-stride", H, 8, grid_stride<H, 8>});
  v.push_back({"chunked", H, 2, chunked<H, 2>});
  v.push_back({"chunked", H, 4, chunked<H, 4>});
  v.push_back({"chunked", H, 8, chunked<H, 8>});
}

int main() {
  const size_t bytes = 2ull << 30, n = bytes / 16;
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  int4 *data = nullptr, *sink = nullptr;
  CHECK(cudaMalloc(&data, bytes));
  CHECK(cudaMalloc(&sink, 16));
  CHECK(cudaMemset(data, 0x5a, bytes));
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));

  std::vector<Variant> variants;
  add_hint<kStreaming>(variants);
  add_hint<kReadOnly>(variants);
  add_hint<kNoAllocate>(variants);
  const int threads_options[] = {256, 512, 1024};
  const int per_sm_options[] = {1, 2, 4, 8, 16};

  printf("%s, %d SMs, L2 %d MiB; 2 GiB read, median of 20 launches\n", prop.name, prop.multiProcessorCount,
         prop.l2CacheSize >> 20);
  printf("%-12s %-15s %6s %7s %6s %9s\n", "order", "hint", "unroll", "threads", "per_sm", "GB/s");
  double best = 0;
  char best_line[160] = "";
  for (const Variant &v : variants) {
    for (int threads : threads_options) {
      for (int per_sm : per_sm_options) {
        if (threads * per_sm > prop.maxThreadsPerMultiProcessor) continue;
        const int blocks = per_sm * prop.multiProcessorCount;
        std::vector<float> ms(20);
        for (int w = 0; w < 2; w++) v.kernel<<<blocks, threads>>>(data, n, sink);
        CHECK(cudaGetLastError());
        for (float &m : ms) {
          CHECK(cudaEventRecord(start));
          v.kernel<<<blocks, threads>>>(data, n, sink);
          CHECK(cudaEventRecord(stop));
          CHECK(cudaEventSynchronize(stop));
          CHECK(cudaEventElapsedTime(&m, start, stop));
        }
        std::sort(ms.begin(), ms.end());
        const double gbps = bytes / (ms[ms.size() / 2] * 1e-3) / 1e9;
        char line[160];
        snprintf(line, sizeof line, "%-12s %-15s %6d %7d %6d %9.1f", v.order, hint_name[v.hint], v.unroll, threads,
                 per_sm, gbps);
        puts(line);
        if (gbps > best) best = gbps, snprintf(best_line, sizeof best_line, "%s", line);
      }
    }
  }
  printf("best: %s\n", best_line);
  return 0;
}
