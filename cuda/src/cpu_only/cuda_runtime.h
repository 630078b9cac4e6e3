// Host stand-in for <cuda_runtime.h> in the CPU-only build (zig build -Dgpu=false), which puts this folder
// first on the include path. It declares the few CUDA runtime types and calls the core uses, and every call
// answers cudaErrorNoDevice: the CPU backend never reaches them, and a "cuda" runtime is refused with
// PKV_ERR_NO_DEVICE because no device is ever counted. The GPU build never sees this file.
#pragma once
#include <cstddef>

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorMemoryAllocation = 2,
  cudaErrorNoDevice = 100,
  cudaErrorNotReady = 600,
  cudaErrorPeerAccessAlreadyEnabled = 704,
};
typedef cudaError_t cudaError;

typedef struct CUstream_st *cudaStream_t;
typedef struct CUevent_st *cudaEvent_t;
typedef struct CUgraph_st *cudaGraph_t;
typedef struct CUgraphExec_st *cudaGraphExec_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
enum cudaStreamCaptureStatus {
  cudaStreamCaptureStatusNone = 0,
  cudaStreamCaptureStatusActive = 1,
  cudaStreamCaptureStatusInvalidated = 2,
};
enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2,
};

constexpr unsigned int cudaStreamNonBlocking = 0x01;
constexpr unsigned int cudaEventDisableTiming = 0x02;
constexpr unsigned int cudaHostAllocPortable = 0x01;

// The fields fill_cuda_info reads; never filled here, since no device exists.
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  int l2CacheSize;
  int multiProcessorCount;
  int major;
  int minor;
  size_t sharedMemPerBlockOptin;
  size_t sharedMemPerMultiprocessor;
  int maxThreadsPerMultiProcessor;
};

// Every call is inline and fails the same way, so the CPU-only library needs no CUDA symbol at all.
inline cudaError_t cudaGetDeviceCount(int *count) {
  *count = 0;
  return cudaErrorNoDevice;
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaPeekAtLastError() { return cudaSuccess; }
inline const char *cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorNoDevice:
      return "cudaErrorNoDevice";
  }
  return "cudaErrorUnknown";
}
inline const char *cudaGetErrorString(cudaError_t error) {
  return error == cudaSuccess ? "no error" : "this library was built without CUDA (zig build -Dgpu=false)";
}

inline cudaError_t cudaSetDevice(int) { return cudaErrorNoDevice; }
inline cudaError_t cudaGetDevice(int *) { return cudaErrorNoDevice; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *, int) { return cudaErrorNoDevice; }
inline cudaError_t cudaDeviceSynchronize() { return cudaErrorNoDevice; }

inline cudaError_t cudaMalloc(void **, size_t) { return cudaErrorNoDevice; }
inline cudaError_t cudaFree(void *) { return cudaErrorNoDevice; }
inline cudaError_t cudaHostAlloc(void **, size_t, unsigned int) { return cudaErrorNoDevice; }
inline cudaError_t cudaMallocHost(void **, size_t) { return cudaErrorNoDevice; }
inline cudaError_t cudaFreeHost(void *) { return cudaErrorNoDevice; }
inline cudaError_t cudaHostGetDevicePointer(void **, void *, unsigned int) { return cudaErrorNoDevice; }
// The runtime header's typed overloads, so `T **` arguments compile as they do with nvcc.
template <class T>
cudaError_t cudaMalloc(T **ptr, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void **>(ptr), bytes);
}
template <class T>
cudaError_t cudaHostAlloc(T **ptr, size_t bytes, unsigned int flags) {
  return cudaHostAlloc(reinterpret_cast<void **>(ptr), bytes, flags);
}
template <class T>
cudaError_t cudaHostGetDevicePointer(T **device, void *host, unsigned int flags) {
  return cudaHostGetDevicePointer(reinterpret_cast<void **>(device), host, flags);
}

inline cudaError_t cudaMemcpy(void *, const void *, size_t, cudaMemcpyKind) { return cudaErrorNoDevice; }
inline cudaError_t cudaMemcpyAsync(void *, const void *, size_t, cudaMemcpyKind, cudaStream_t = nullptr) {
  return cudaErrorNoDevice;
}
inline cudaError_t cudaMemcpy2DAsync(void *, size_t, const void *, size_t, size_t, size_t, cudaMemcpyKind,
                                     cudaStream_t = nullptr) {
  return cudaErrorNoDevice;
}
inline cudaError_t cudaDeviceCanAccessPeer(int *can, int, int) {
  *can = 0;
  return cudaErrorNoDevice;
}
inline cudaError_t cudaDeviceEnablePeerAccess(int, unsigned int) { return cudaErrorNoDevice; }
inline cudaError_t cudaMemset(void *, int, size_t) { return cudaErrorNoDevice; }
inline cudaError_t cudaMemsetAsync(void *, int, size_t, cudaStream_t = nullptr) { return cudaErrorNoDevice; }

inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t *, unsigned int) { return cudaErrorNoDevice; }
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaErrorNoDevice; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaErrorNoDevice; }
inline cudaError_t cudaStreamQuery(cudaStream_t) { return cudaErrorNoDevice; }
inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned int = 0) {
  return cudaErrorNoDevice;
}
inline cudaError_t cudaStreamIsCapturing(cudaStream_t, cudaStreamCaptureStatus *status) {
  *status = cudaStreamCaptureStatusNone;
  return cudaErrorNoDevice;
}
inline cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) { return cudaErrorNoDevice; }
inline cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t *) { return cudaErrorNoDevice; }

inline cudaError_t cudaEventCreate(cudaEvent_t *) { return cudaErrorNoDevice; }
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t *, unsigned int) { return cudaErrorNoDevice; }
inline cudaError_t cudaEventDestroy(cudaEvent_t) { return cudaErrorNoDevice; }
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t = nullptr) { return cudaErrorNoDevice; }
inline cudaError_t cudaEventQuery(cudaEvent_t) { return cudaErrorNoDevice; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaErrorNoDevice; }
inline cudaError_t cudaEventElapsedTime(float *, cudaEvent_t, cudaEvent_t) { return cudaErrorNoDevice; }

inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t *, cudaGraph_t, unsigned long long = 0) {
  return cudaErrorNoDevice;
}
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t, cudaStream_t) { return cudaErrorNoDevice; }
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t) { return cudaErrorNoDevice; }
inline cudaError_t cudaGraphDestroy(cudaGraph_t) { return cudaErrorNoDevice; }
