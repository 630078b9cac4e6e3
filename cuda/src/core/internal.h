// Shared internals of the native library: error reporting, the handle registry and the object layouts.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <new>
#include <utility>
#include <vector>

#include "persistentkv.h"

namespace pkv {

// Records this thread's last error and returns `code`, so call sites read `return fail(...)`. The message
// always starts with the entry point being served (current_call), added here when the text lacks it, so
// helpers deep in a call need not know which entry point they serve.
pkv_status fail(pkv_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
pkv_status fail_cuda(cudaError_t err, const char *call, const char *where);
// Starts serving entry point `func` on this thread: clears the last error and names the call.
void begin_call(const char *func);
const char *current_call();
// The status and message of the exception being handled (called from a catch block in PKV_API_END).
pkv_status exception_status(const char *func);

enum class Kind : uint32_t { Runtime = 1, Buffer, Stream, Event, KvPool, DecodeEngine, Graph };
const char *kind_name(Kind kind);

// Handles. What crosses the ABI is never an object's address but a token: a 64-bit id from a counter
// that is never reused (with the kind in its upper bits), looked up in a registry of live objects. A
// freed object's token stays unknown forever, so an address the allocator hands out again cannot bring
// a stale handle back to life, and a plan keeps its pool's token to notice that pool's destruction.
// Tokens stay below 2^53 so that the bindings carry them as exact JavaScript numbers.
uint64_t register_handle(void *object, Kind kind);  // the object's token
void unregister_handle(void *object);
uint64_t token_of(const void *object);            // 0 if the object is not registered
bool token_is_live(uint64_t token);               // the token's object (of its kind) still exists
Kind token_kind(uint64_t token);
void *lookup_handle(uint64_t token, Kind kind);   // the live object, or nullptr
// Resolves handle `arg` of entry point `func` to its object, or fails with PKV_ERR_INVALID_HANDLE
// saying whether it was NULL, freed, of another kind or never handed out.
pkv_status resolve_handle(const void *handle, Kind kind, const char *func, const char *arg, void **object);
template <class T>
pkv_status resolve(T *&handle, Kind kind, const char *func, const char *arg) {
  void *object = nullptr;
  pkv_status s = resolve_handle(handle, kind, func, arg, &object);
  if (s == PKV_OK) handle = static_cast<T *>(object);
  return s;
}
template <class T>
T *lookup(uint64_t token, Kind kind) {
  return static_cast<T *>(lookup_handle(token, kind));
}
// The value handed to the caller for a registered object.
template <class T>
T *handle_of(uint64_t token) {
  return reinterpret_cast<T *>(static_cast<uintptr_t>(token));
}

}  // namespace pkv

#define PKV_STR2(x) #x
#define PKV_STR(x) PKV_STR2(x)

// Entry and exit of every C entry point: name the call, clear the last error, turn C++ exceptions into
// statuses whose message names the call.
#define PKV_API_BEGIN \
  ::pkv::begin_call(__func__); \
  try {
#define PKV_API_END \
  } \
  catch (...) { return ::pkv::exception_status(__func__); }

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
// Resolves handle parameter `h` in place: from here on `h` is the object, or the call has failed.
#define PKV_CHECK(h, kind) PKV_TRY(::pkv::resolve((h), ::pkv::Kind::kind, __func__, #h))
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
  // Tokens of the objects that work queued on a capturing stream uses (note_capture_use); pkv_capture_end
  // hands them to the graph, whose launches then check that every one still exists.
  std::vector<std::pair<cudaStream_t, uint64_t>> capture_uses;
  void *flush_buffer;  // lazily allocated, larger than L2 (pkv_flush_l2)
  uint64_t flush_bytes;
};

struct pkv_buffer {
  pkv_runtime *rt;
  int32_t kind;  // PKV_MEM_*
  void *ptr;
  uint64_t bytes;
  bool borrowed;  // wraps the caller's memory (pkv_buffer_wrap): freeing forgets it, frees nothing
};

struct pkv_stream {
  pkv_runtime *rt;
  cudaStream_t stream;
  bool borrowed;  // the caller's stream (pkv_stream_wrap): destroying forgets it, never destroys it
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
// Work queued on a capturing stream runs later, at each launch of the graph: the objects it touches
// are remembered by token, so a launch after one of them was freed is refused instead of touching
// freed memory. A no-op when `stream` is not capturing.
void note_capture_use(pkv_runtime *rt, cudaStream_t stream, const void *object);
// Entry points that wait for the GPU, allocate or free refuse while a capture is open on the runtime:
// inside a capture such a call fails and invalidates the capture, so the failed call would change
// something. (Copies, fills of device memory and device-buffer runs are what a capture records.)
inline pkv_status check_not_capturing(const pkv_runtime *rt) {
  if (rt->capturing.empty()) return PKV_OK;
  return fail(PKV_ERR_BAD_STATE, "a graph capture is open on this runtime; end it with pkv_capture_end first");
}
// An optional stream argument: NULL, or a live stream of `rt` (a stream of another runtime may be on
// another device). Resolves `stream` in place like PKV_CHECK.
pkv_status check_stream(pkv_runtime *rt, pkv_stream *&stream, const char *func);
// Registers a new child object, remembers its destructor for runtime_destroy, and returns its token.
// If that throws, the child is destroyed first.
uint64_t adopt(pkv_runtime *rt, void *child, Kind kind, void (*destroy)(void *));
void disown(pkv_runtime *rt, void *child);  // unregisters and forgets it (its destroy call frees it)
// Host or device allocation by PKV_MEM_* kind and backend; 256-byte aligned. A failure is
// PKV_ERR_OUT_OF_MEMORY naming the current entry point, the memory kind and the size.
uint64_t host_memory_bytes();  // physical memory of this machine
pkv_status raw_alloc(pkv_runtime *rt, int32_t kind, uint64_t bytes, void **out);
void raw_free(pkv_runtime *rt, int32_t kind, void *ptr);
}  // namespace pkv
