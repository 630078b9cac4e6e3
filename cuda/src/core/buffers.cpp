// Device and pinned buffers, streams and events. On the CPU backend every kind is aligned host memory
// and every operation completes at once.
#include <chrono>
#include <cstdlib>
#include <cstring>

#include <unistd.h>

#include "checked.h"
#include "internal.h"

namespace {

constexpr uint64_t kAlign = 256;  // a page slice or a 16-byte vector never straddles an allocation edge

double now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

pkv_status check_range(const pkv_buffer *buf, uint64_t offset, uint64_t bytes, const char *func) {
  (void)func;  // fail names the entry point
  return pkv::check_range("buffer", offset, bytes, buf->bytes);
}

void destroy_buffer(void *object) {
  auto *buf = static_cast<pkv_buffer *>(object);
  pkv::disown(buf->rt, buf);
  if (!buf->borrowed) pkv::raw_free(buf->rt, buf->kind, buf->ptr);
  delete buf;
}

void destroy_stream(void *object) {
  auto *s = static_cast<pkv_stream *>(object);
  pkv::disown(s->rt, s);
  if (pkv::on_cuda(s->rt) && !s->borrowed) {
    cudaStreamSynchronize(s->stream);
    cudaStreamDestroy(s->stream);
  }
  delete s;
}

void destroy_event(void *object) {
  auto *e = static_cast<pkv_event *>(object);
  pkv::disown(e->rt, e);
  if (pkv::on_cuda(e->rt)) cudaEventDestroy(e->event);
  delete e;
}

}  // namespace

namespace pkv {

uint64_t host_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : (1ull << 32);
}

pkv_status raw_alloc(pkv_runtime *rt, int32_t kind, uint64_t bytes, void **out) {
  *out = nullptr;
  const char *what = !on_cuda(rt) ? "host" : kind == PKV_MEM_DEVICE ? "device" : "pinned host";
  // Rounded up to whole alignment units; a size whose rounding would wrap cannot be allocated anywhere.
  if (bytes > kMaxSize - kAlign)
    return fail(PKV_ERR_OUT_OF_MEMORY, "%s allocation of %llu bytes is larger than any memory", what,
                (unsigned long long)bytes);
  uint64_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  if (rounded == 0) rounded = kAlign;
  // Host memory beyond the machine's is refused here: with overcommit, malloc might grant it and the
  // process would be killed later, when the memory is touched.
  if ((!on_cuda(rt) || kind == PKV_MEM_PINNED) && rounded > host_memory_bytes())
    return fail(PKV_ERR_OUT_OF_MEMORY, "%s allocation of %llu bytes is larger than this machine's %llu bytes of memory",
                what, (unsigned long long)bytes, (unsigned long long)host_memory_bytes());
  cudaError_t e = cudaSuccess;
  if (!on_cuda(rt)) *out = aligned_alloc(kAlign, rounded);
  else if (kind == PKV_MEM_DEVICE) e = cudaMalloc(out, rounded);
  else e = cudaHostAlloc(out, rounded, cudaHostAllocPortable);
  if (e != cudaSuccess) {
    *out = nullptr;
    cudaGetLastError();  // an allocation failure is not sticky; clear it for the next call
    return fail(e == cudaErrorMemoryAllocation ? PKV_ERR_OUT_OF_MEMORY : PKV_ERR_CUDA,
                "%s allocation of %llu bytes failed: %s (%s)", what, (unsigned long long)bytes, cudaGetErrorName(e),
                cudaGetErrorString(e));
  }
  if (!*out)
    return fail(PKV_ERR_OUT_OF_MEMORY, "%s allocation of %llu bytes failed (out of memory)", what,
                (unsigned long long)bytes);
  return PKV_OK;
}

void raw_free(pkv_runtime *rt, int32_t kind, void *ptr) {
  if (!ptr) return;
  if (!on_cuda(rt)) free(ptr);
  else if (kind == PKV_MEM_DEVICE) cudaFree(ptr);
  else cudaFreeHost(ptr);
}

}  // namespace pkv

extern "C" {

pkv_status pkv_buffer_alloc(pkv_runtime *rt, int32_t kind, uint64_t bytes, pkv_buffer **out) {
  PKV_API_BEGIN
  PKV_CHECK(rt, Runtime);
  PKV_NOT_NULL(out);
  *out = nullptr;
  if (kind != PKV_MEM_DEVICE && kind != PKV_MEM_PINNED)
    return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "pkv_buffer_alloc: kind %d is neither DEVICE (0) nor PINNED (1)", kind);
  if (bytes == 0) return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "pkv_buffer_alloc: size is 0 bytes");
  PKV_TRY(pkv::check_not_capturing(rt));
  void *ptr = nullptr;
  PKV_TRY(pkv::raw_alloc(rt, kind, bytes, &ptr));
  pkv_buffer *buf = nullptr;
  try {
    buf = new pkv_buffer{rt, kind, ptr, bytes, false};
  } catch (...) {
    pkv::raw_free(rt, kind, ptr);
    throw;
  }
  *out = pkv::handle_of<pkv_buffer>(pkv::adopt(rt, buf, pkv::Kind::Buffer, destroy_buffer));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_buffer_free(pkv_buffer *buf) {
  PKV_API_BEGIN
  PKV_CHECK(buf, Buffer);
  PKV_TRY(pkv::check_not_capturing(buf->rt));
  // No free under a kernel; a borrowed buffer frees nothing, so it need not wait.
  if (pkv::on_cuda(buf->rt) && !buf->borrowed) PKV_CUDA_TRY(cudaStreamSynchronize(buf->rt->stream));
  destroy_buffer(buf);
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_buffer_address(pkv_buffer *buf, uint64_t *out) {
  PKV_API_BEGIN
  PKV_CHECK(buf, Buffer);
  PKV_NOT_NULL(out);
  *out = (uint64_t)(uintptr_t)buf->ptr;
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_buffer_size(pkv_buffer *buf, uint64_t *out) {
  PKV_API_BEGIN
  PKV_CHECK(buf, Buffer);
  PKV_NOT_NULL(out);
  *out = buf->bytes;
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_buffer_kind(pkv_buffer *buf, int32_t *out) {
  PKV_API_BEGIN
  PKV_CHECK(buf, Buffer);
  PKV_NOT_NULL(out);
  *out = buf->kind;
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_buffer_write(pkv_buffer *dst, uint64_t offset, const void *src, uint64_t bytes) {
  PKV_API_BEGIN
  PKV_CHECK(dst, Buffer);
  if (bytes == 0) return PKV_OK;
  PKV_NOT_NULL(src);
  PKV_TRY(check_range(dst, offset, bytes, __func__));
  PKV_TRY(pkv::check_not_capturing(dst->rt));
  char *to = static_cast<char *>(dst->ptr) + offset;
  if (!pkv::on_cuda(dst->rt)) {
    memcpy(to, src, bytes);
    return PKV_OK;
  }
  PKV_CUDA_TRY(cudaMemcpyAsync(to, src, bytes, cudaMemcpyDefault, dst->rt->stream));
  PKV_CUDA_TRY(cudaStreamSynchronize(dst->rt->stream));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_buffer_read(pkv_buffer *src, uint64_t offset, void *dst, uint64_t bytes) {
  PKV_API_BEGIN
  PKV_CHECK(src, Buffer);
  if (bytes == 0) return PKV_OK;
  PKV_NOT_NULL(dst);
  PKV_TRY(check_range(src, offset, bytes, __func__));
  PKV_TRY(pkv::check_not_capturing(src->rt));
  const char *from = static_cast<const char *>(src->ptr) + offset;
  if (!pkv::on_cuda(src->rt)) {
    memcpy(dst, from, bytes);
    return PKV_OK;
  }
  PKV_CUDA_TRY(cudaMemcpyAsync(dst, from, bytes, cudaMemcpyDefault, src->rt->stream));
  PKV_CUDA_TRY(cudaStreamSynchronize(src->rt->stream));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_buffer_copy(pkv_buffer *dst, uint64_t dst_offset, pkv_buffer *src, uint64_t src_offset,
                           uint64_t bytes, pkv_stream *stream) {
  PKV_API_BEGIN
  PKV_CHECK(dst, Buffer);
  PKV_CHECK(src, Buffer);
  PKV_TRY(pkv::check_stream(dst->rt, stream, __func__));
  if (dst->rt != src->rt) return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "pkv_buffer_copy: buffers of two runtimes");
  PKV_TRY(check_range(dst, dst_offset, bytes, __func__));
  PKV_TRY(check_range(src, src_offset, bytes, __func__));
  // An overlapping copy within one buffer is undefined on the GPU (cudaMemcpyAsync): refused on both backends.
  if (dst == src && bytes > 0 && dst_offset < src_offset + bytes && src_offset < dst_offset + bytes)
    return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "pkv_buffer_copy: [%llu, +%llu) and [%llu, +%llu) of one buffer overlap",
                     (unsigned long long)dst_offset, (unsigned long long)bytes, (unsigned long long)src_offset,
                     (unsigned long long)bytes);
  if (bytes == 0) return PKV_OK;
  char *to = static_cast<char *>(dst->ptr) + dst_offset;
  const char *from = static_cast<const char *>(src->ptr) + src_offset;
  if (!pkv::on_cuda(dst->rt)) {
    memmove(to, from, bytes);
    return PKV_OK;
  }
  pkv::note_capture_use(dst->rt, pkv::stream_of(dst->rt, stream), dst);
  pkv::note_capture_use(dst->rt, pkv::stream_of(dst->rt, stream), src);
  PKV_CUDA_TRY(cudaMemcpyAsync(to, from, bytes, cudaMemcpyDefault, pkv::stream_of(dst->rt, stream)));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_buffer_fill(pkv_buffer *dst, uint64_t offset, uint32_t byte_value, uint64_t bytes,
                           pkv_stream *stream) {
  PKV_API_BEGIN
  PKV_CHECK(dst, Buffer);
  PKV_TRY(pkv::check_stream(dst->rt, stream, __func__));
  if (byte_value > 255) return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "pkv_buffer_fill: byte value %u > 255", byte_value);
  PKV_TRY(check_range(dst, offset, bytes, __func__));
  if (bytes == 0) return PKV_OK;
  if (dst->kind == PKV_MEM_PINNED) PKV_TRY(pkv::check_not_capturing(dst->rt));  // a host fill waits for the stream
  char *to = static_cast<char *>(dst->ptr) + offset;
  if (!pkv::on_cuda(dst->rt) || dst->kind == PKV_MEM_PINNED) {
    if (pkv::on_cuda(dst->rt)) PKV_CUDA_TRY(cudaStreamSynchronize(pkv::stream_of(dst->rt, stream)));
    memset(to, (int)byte_value, bytes);
    return PKV_OK;
  }
  pkv::note_capture_use(dst->rt, pkv::stream_of(dst->rt, stream), dst);
  PKV_CUDA_TRY(cudaMemsetAsync(to, (int)byte_value, bytes, pkv::stream_of(dst->rt, stream)));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_stream_create(pkv_runtime *rt, pkv_stream **out) {
  PKV_API_BEGIN
  PKV_CHECK(rt, Runtime);
  PKV_NOT_NULL(out);
  *out = nullptr;
  cudaStream_t cs = nullptr;
  if (pkv::on_cuda(rt)) PKV_CUDA_TRY(cudaStreamCreateWithFlags(&cs, cudaStreamNonBlocking));
  auto *s = new pkv_stream{rt, cs, false};
  *out = pkv::handle_of<pkv_stream>(pkv::adopt(rt, s, pkv::Kind::Stream, destroy_stream));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_stream_destroy(pkv_stream *stream) {
  PKV_API_BEGIN
  PKV_CHECK(stream, Stream);
  if (pkv::is_capturing(stream->rt, stream->stream))
    return pkv::fail(PKV_ERR_BAD_STATE, "pkv_stream_destroy: the stream is capturing; end the capture first");
  destroy_stream(stream);
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_stream_synchronize(pkv_stream *stream) {
  PKV_API_BEGIN
  PKV_CHECK(stream, Stream);
  if (pkv::is_capturing(stream->rt, stream->stream))
    return pkv::fail(PKV_ERR_BAD_STATE, "pkv_stream_synchronize: the stream is capturing; end the capture first");
  if (pkv::on_cuda(stream->rt)) PKV_CUDA_TRY(cudaStreamSynchronize(stream->stream));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_event_create(pkv_runtime *rt, pkv_event **out) {
  PKV_API_BEGIN
  PKV_CHECK(rt, Runtime);
  PKV_NOT_NULL(out);
  *out = nullptr;
  cudaEvent_t ce = nullptr;
  if (pkv::on_cuda(rt)) PKV_CUDA_TRY(cudaEventCreate(&ce));
  auto *e = new pkv_event{rt, ce, -1.0};
  *out = pkv::handle_of<pkv_event>(pkv::adopt(rt, e, pkv::Kind::Event, destroy_event));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_event_destroy(pkv_event *event) {
  PKV_API_BEGIN
  PKV_CHECK(event, Event);
  destroy_event(event);
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_event_record(pkv_event *event, pkv_stream *stream) {
  PKV_API_BEGIN
  PKV_CHECK(event, Event);
  PKV_TRY(pkv::check_stream(event->rt, stream, __func__));
  if (!pkv::on_cuda(event->rt)) {
    event->host_ms = now_ms();
    return PKV_OK;
  }
  PKV_CUDA_TRY(cudaEventRecord(event->event, pkv::stream_of(event->rt, stream)));
  event->host_ms = 0;
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_event_synchronize(pkv_event *event) {
  PKV_API_BEGIN
  PKV_CHECK(event, Event);
  if (pkv::on_cuda(event->rt)) PKV_CUDA_TRY(cudaEventSynchronize(event->event));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_event_query(pkv_event *event, int32_t *done) {
  PKV_API_BEGIN
  PKV_CHECK(event, Event);
  PKV_NOT_NULL(done);
  *done = 1;
  if (!pkv::on_cuda(event->rt)) return PKV_OK;
  const cudaError_t e = cudaEventQuery(event->event);
  if (e == cudaErrorNotReady) {
    cudaGetLastError();  // "not ready" is an answer, not an error: keep it from the next launch's check
    *done = 0;
    return PKV_OK;
  }
  PKV_CUDA_TRY(e);
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_event_elapsed_ms(pkv_event *start, pkv_event *end, float *ms) {
  PKV_API_BEGIN
  PKV_CHECK(start, Event);
  PKV_CHECK(end, Event);
  PKV_NOT_NULL(ms);
  if (start->rt != end->rt)
    return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "pkv_event_elapsed_ms: the events belong to two runtimes");
  if (start->host_ms < 0 || end->host_ms < 0)
    return pkv::fail(PKV_ERR_BAD_STATE, "pkv_event_elapsed_ms: an event was never recorded");
  if (!pkv::on_cuda(start->rt)) {
    *ms = (float)(end->host_ms - start->host_ms);
    return PKV_OK;
  }
  PKV_CUDA_TRY(cudaEventElapsedTime(ms, start->event, end->event));
  return PKV_OK;
  PKV_API_END
}

}  // extern "C"
