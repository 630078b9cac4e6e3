// Host cost of the CUDA calls a decode step can make, on this machine: the numbers behind the plan
// path's design (which calls a plan may afford). Median of 2000 calls, synchronizing every 50 so the
// launch queue never fills. Built and run by hand on the GPU machine:
//   nvcc -O2 -arch=sm_90 -o /tmp/cuda-calls bench/cuda-calls.cu && /tmp/cuda-calls
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

template <int N>
struct Blob {
  int words[N / 4];
};

__global__ void empty_kernel(int) {}
template <int N>
__global__ void blob_kernel(const Blob<N> b, int *out) {
  if (threadIdx.x == 0 && b.words[0] == 12345) *out = 1;
}
// Copies a plan image from mapped host memory, one 16-byte word per thread.
__global__ void pull_kernel(const int4 *host, int4 *dev, int words) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < words; i += gridDim.x * blockDim.x) dev[i] = host[i];
}

template <class F>
double median_us(F f) {
  std::vector<double> t;
  cudaStream_t s = nullptr;
  for (int i = 0; i < 2000; i++) {
    auto a = std::chrono::steady_clock::now();
    f();
    auto b = std::chrono::steady_clock::now();
    t.push_back(std::chrono::duration<double, std::micro>(b - a).count());
    if (i % 50 == 49) cudaDeviceSynchronize();
  }
  (void)s;
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

int main() {
  cudaStream_t s;
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  cudaEvent_t ev;
  cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
  void *host, *dev;
  cudaHostAlloc(&host, 1 << 20, cudaHostAllocMapped);
  cudaMalloc(&dev, 1 << 20);
  int *flag;
  cudaMalloc(&flag, 4);
  cudaEventRecord(ev, s);
  cudaDeviceSynchronize();
  printf("event query (done)       %.2f us\n", median_us([&] { cudaEventQuery(ev); }));
  printf("event record             %.2f us\n", median_us([&] { cudaEventRecord(ev, s); }));
  printf("memcpy async 12 KiB H2D  %.2f us\n", median_us([&] { cudaMemcpyAsync(dev, host, 12 << 10, cudaMemcpyHostToDevice, s); }));
  printf("memcpy async 64 KiB H2D  %.2f us\n", median_us([&] { cudaMemcpyAsync(dev, host, 64 << 10, cudaMemcpyHostToDevice, s); }));
  printf("launch, 4-byte params    %.2f us\n", median_us([&] { empty_kernel<<<1, 32, 0, s>>>(0); }));
  printf("launch, 4 KiB params     %.2f us\n", median_us([&] { blob_kernel<4096><<<1, 32, 0, s>>>(*(Blob<4096> *)host, flag); }));
  printf("launch, 16 KiB params    %.2f us\n", median_us([&] { blob_kernel<16384><<<1, 32, 0, s>>>(*(Blob<16384> *)host, flag); }));
  printf("launch, 32000 B params   %.2f us\n", median_us([&] { blob_kernel<32000><<<1, 32, 0, s>>>(*(Blob<32000> *)host, flag); }));
  // Host writes and reads of the pinned staging memory against ordinary memory (plans are built in place).
  std::vector<int4> plain(768);
  auto touch = [&](int4 *m) {
    for (int i = 0; i < 768; i++) m[i] = int4{i, i + 1, i + 2, i + 3};
    int sum = 0;
    for (int i = 0; i < 768; i++) sum += m[i].x + m[i].w;
    if (sum == 42) printf("!");
  };
  printf("write+read 12 KiB pinned %.2f us\n", median_us([&] { touch((int4 *)host); }));
  printf("write+read 12 KiB malloc %.2f us\n", median_us([&] { touch(plain.data()); }));
  printf("query+copy+record        %.2f us\n", median_us([&] {
    cudaEventQuery(ev);
    cudaMemcpyAsync(dev, host, 12 << 10, cudaMemcpyHostToDevice, s);
    cudaEventRecord(ev, s);
  }));
  // A plan's upload: the host writes the image into pinned memory, then copies it (sizes of B8 .. B1024).
  for (int kib : {4, 16, 40, 64, 160}) {
    const int words = kib * 64;
    auto *img = (int4 *)host;
    double write = median_us([&] {
      for (int i = 0; i < words; i++) img[i] = int4{i, i, i, i};
    });
    double both = median_us([&] {
      for (int i = 0; i < words; i++) img[i] = int4{i, i, i, i};
      cudaMemcpyAsync(dev, host, kib << 10, cudaMemcpyHostToDevice, s);
    });
    printf("write %3d KiB %.2f us, + copy %.2f us\n", kib, write, both - write);
  }
  printf("stream query             %.2f us\n", median_us([&] { cudaStreamQuery(s); }));
  printf("last error               %.2f us\n", median_us([&] { cudaGetLastError(); }));
  // GPU time of pulling a 12 KiB image from mapped host memory vs a 12 KiB async copy.
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  auto gpu_us = [&](auto f) {
    std::vector<float> t;
    for (int i = 0; i < 200; i++) {
      cudaEventRecord(a, s);
      f();
      cudaEventRecord(b, s);
      cudaEventSynchronize(b);
      float ms;
      cudaEventElapsedTime(&ms, a, b);
      t.push_back(ms * 1000);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  };
  void *mapped;
  cudaHostGetDevicePointer(&mapped, host, 0);
  printf("gpu: empty kernel        %.2f us\n", gpu_us([&] { empty_kernel<<<1, 32, 0, s>>>(0); }));
  printf("gpu: memcpy 12 KiB       %.2f us\n", gpu_us([&] { cudaMemcpyAsync(dev, host, 12 << 10, cudaMemcpyHostToDevice, s); }));
  printf("gpu: pull 12 KiB mapped  %.2f us\n", gpu_us([&] { pull_kernel<<<6, 128, 0, s>>>((int4 *)mapped, (int4 *)dev, 768); }));
  printf("gpu: pull 64 KiB mapped  %.2f us\n", gpu_us([&] { pull_kernel<<<32, 128, 0, s>>>((int4 *)mapped, (int4 *)dev, 4096); }));
  printf("errors: %s\n", cudaGetErrorString(cudaDeviceSynchronize()));
  return 0;
}
