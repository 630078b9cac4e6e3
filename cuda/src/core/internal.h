// Shared internals of the native library: error reporting, the handle registry and the object layouts.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <new>
#include <vector>

#include "persistentkv.h"

namespace pkv {

// Records this thread's last error and returns `code`, so call sites read `return fail(...)`.
pkv_status fail(pkv_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
pkv_status fail_cuda(cudaError_t err, const char *call, const char *where);
void clear_error();

enum class Kind : uint32_t { Runtime = 1, Buffer, Stream, Event, KvPool, DecodeEngine, Graph };
const char *kind_name(Kind kind);

// Every handle handed out is registered, so a stale or foreign pointer is an error, not a crash.
void register_handle(void *handle, Kind kind);
void unregister_handle(void *handle);
bool is_live(const void *handle, Kind kind);
pkv_status check_handle(const void *handle, Kind kind, const char *func, const char *arg);

}  // namespace pkv

#define PKV_STR2(x) #x
#define PKV_STR(x) PKV_STR2(x)

// Entry and exit of every C entry point: clear the last error, turn C++ exceptions into statuses.
#define PKV_API_BEGIN \
  ::pkv::clear_error(); \
  try {
#define PKV_API_END \
  } \
  catch (const std::bad_alloc &) { return ::pkv::fail(PKV_ERR_OUT_OF_MEMORY, "%s: host allocation failed", __func__); } \
  catch (...) { return ::pkv::fail(PKV_ERR_INTERNAL, "%s: unexpected exception", __func__); }

#define PKV_TRY(expr) \
  do { \
    pkv_status s_ = (expr); \
    if (s_ != PKV_OK) return s_; \
  } while (0)
#define PKV_CUDA_TRY(call) \
  do { \
    cudaError_t e_ = (call); \
    if (e_ != cudaSuccess) return ::pkv::fail_cuda(e_, #call, __FILE__ ":" PKV_STR(__LINE__)); \
  } while (0)
#define PKV_CHECK(h, kind) PKV_TRY(::pkv::check_handle((h), ::pkv::Kind::kind, __func__, #h))
#define PKV_NOT_NULL(p) \
  do { \
    if ((p) == nullptr) return ::pkv::fail(PKV_ERR_NULL_POINTER, "%s: %s is NULL", __func__, #p); \
  } while (0)

// ---- objects behind the opaque handles ---------------------------------------------------------

struct pkv_runtime {
  int32_t backend;
  int32_t device;
  cudaStream_t stream;  // the runtime's own stream (CUDA); nullptr on the CPU backend
  pkv_device_info info;
  // Objects created from this runtime and not yet freed, with their destructors; destroy frees them.
  struct Child {
    void *object;
    pkv::Kind kind;
    void (*destroy)(void *);
  };
  std::vector<Child> children;
  // Streams of this runtime being captured into a graph. Captures begin only through pkv_capture_begin,
  // so plans and runs read this instead of asking CUDA on every call.
  std::vector<cudaStream_t> capturing;
  void *flush_buffer;  // lazily allocated, larger than L2 (pkv_flush_l2)
  uint64_t flush_bytes;
};

struct pkv_buffer {
  pkv_runtime *rt;
  int32_t kind;  // PKV_MEM_*
  void *ptr;
  uint64_t bytes;
};

struct pkv_stream {
  pkv_runtime *rt;
  cudaStream_t stream;
};

struct pkv_event {
  pkv_runtime *rt;
  cudaEvent_t event;  // CUDA backend
  double host_ms;     // CPU backend: steady clock at record
};

namespace pkv {
inline bool on_cuda(const pkv_runtime *rt) { return rt->backend == PKV_BACKEND_CUDA; }
// The CUDA stream for an optional stream argument.
inline cudaStream_t stream_of(pkv_runtime *rt, pkv_stream *s) { return s ? s->stream : rt->stream; }
inline bool is_capturing(const pkv_runtime *rt, cudaStream_t stream) {
  for (cudaStream_t s : rt->capturing)
    if (s == stream) return true;
  return false;
}
// An optional stream argument: NULL, or a live stream of `rt` (a stream of another runtime may be on
// another device).
pkv_status check_stream(pkv_runtime *rt, pkv_stream *stream, const char *func);
// Registers a new child object and remembers its destructor for runtime_destroy.
void adopt(pkv_runtime *rt, void *child, Kind kind, void (*destroy)(void *));
void disown(pkv_runtime *rt, void *child);  // unregisters and forgets it (its destroy call frees it)
// Host or device allocation by PKV_MEM_* kind and backend; 256-byte aligned.
pkv_status raw_alloc(pkv_runtime *rt, int32_t kind, uint64_t bytes, void **out);
void raw_free(pkv_runtime *rt, int32_t kind, void *ptr);
}  // namespace pkv
