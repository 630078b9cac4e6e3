// Runtime lifetime and device information for both backends.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "internal.h"

namespace {

void fill_cpu_info(pkv_device_info *info) {
  memset(info, 0, sizeof *info);
  snprintf(info->name, sizeof info->name, "CPU (host reference backend)");
  info->backend = PKV_BACKEND_CPU;
  info->multiprocessors = (int32_t)std::thread::hardware_concurrency();
}

pkv_status fill_cuda_info(int32_t device, pkv_device_info *info) {
  cudaDeviceProp prop;
  PKV_CUDA_TRY(cudaGetDeviceProperties(&prop, device));
  memset(info, 0, sizeof *info);
  snprintf(info->name, sizeof info->name, "%s", prop.name);
  info->total_memory = (int64_t)prop.totalGlobalMem;
  info->l2_bytes = prop.l2CacheSize;
  info->backend = PKV_BACKEND_CUDA;
  info->device = device;
  info->multiprocessors = prop.multiProcessorCount;
  info->cc_major = prop.major;
  info->cc_minor = prop.minor;
  info->max_shared_per_block = (int32_t)prop.sharedMemPerBlockOptin;
  info->max_shared_per_sm = (int32_t)prop.sharedMemPerMultiprocessor;
  info->max_threads_per_sm = prop.maxThreadsPerMultiProcessor;
  return PKV_OK;
}

}  // namespace

extern "C" {

int32_t pkv_cuda_device_count(void) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

int32_t pkv_device_info_size(void) { return (int32_t)sizeof(pkv_device_info); }

pkv_status pkv_runtime_create(int32_t backend, int32_t device, pkv_runtime **out) {
  PKV_API_BEGIN
  PKV_NOT_NULL(out);
  *out = nullptr;
  if (backend != PKV_BACKEND_CPU && backend != PKV_BACKEND_CUDA)
    return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "pkv_runtime_create: backend %d is neither CPU (0) nor CUDA (1)",
                     backend);
  auto *rt = new pkv_runtime();
  rt->backend = backend;
  rt->device = device;
  if (backend == PKV_BACKEND_CPU) {
    fill_cpu_info(&rt->info);
  } else {
    int count = pkv_cuda_device_count();
    if (count == 0) {
      delete rt;
      return pkv::fail(PKV_ERR_NO_DEVICE, "pkv_runtime_create: no CUDA device is visible (no GPU or no driver)");
    }
    if (device < 0 || device >= count) {
      delete rt;
      return pkv::fail(PKV_ERR_OUT_OF_RANGE, "pkv_runtime_create: device %d out of range (%d visible)", device,
                       count);
    }
    pkv_status s = PKV_OK;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&rt->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) s = pkv::fail_cuda(e, "runtime stream creation", "pkv_runtime_create");
    if (s == PKV_OK) s = fill_cuda_info(device, &rt->info);
    if (s != PKV_OK) {
      if (rt->stream) cudaStreamDestroy(rt->stream);
      delete rt;
      return s;
    }
  }
  try {
    *out = pkv::handle_of<pkv_runtime>(pkv::register_handle(rt, pkv::Kind::Runtime));
  } catch (...) {
    if (rt->stream) cudaStreamDestroy(rt->stream);
    delete rt;
    throw;
  }
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_runtime_destroy(pkv_runtime *rt) {
  PKV_API_BEGIN
  PKV_CHECK(rt, Runtime);
  // A capture still open is abandoned: its graph is discarded, so the streams can be synchronised.
  for (cudaStream_t s : rt->capturing) {
    cudaGraph_t graph = nullptr;
    if (cudaStreamEndCapture(s, &graph) == cudaSuccess && graph) cudaGraphDestroy(graph);
    cudaGetLastError();
  }
  rt->capturing.clear();
  rt->capture_uses.clear();
  if (pkv::on_cuda(rt)) cudaStreamSynchronize(rt->stream);
  // Children are freed newest first: engines and pools may own buffers made earlier.
  while (!rt->children.empty()) {
    pkv_runtime::Child child = rt->children.back();
    child.destroy(child.object);  // each destructor disowns itself
  }
  if (rt->flush_buffer) pkv::raw_free(rt, PKV_MEM_DEVICE, rt->flush_buffer);
  if (pkv::on_cuda(rt)) cudaStreamDestroy(rt->stream);
  pkv::unregister_handle(rt);
  delete rt;
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_runtime_synchronize(pkv_runtime *rt) {
  PKV_API_BEGIN
  PKV_CHECK(rt, Runtime);
  PKV_TRY(pkv::check_not_capturing(rt));
  if (pkv::on_cuda(rt)) PKV_CUDA_TRY(cudaStreamSynchronize(rt->stream));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_device_info_get(pkv_runtime *rt, pkv_device_info *out) {
  PKV_API_BEGIN
  PKV_CHECK(rt, Runtime);
  PKV_NOT_NULL(out);
  *out = rt->info;
  return PKV_OK;
  PKV_API_END
}

}  // extern "C"
