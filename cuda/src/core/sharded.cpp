// Several devices of one host: what a cache and an engine sharded by KV heads need natively. Attention
// itself needs no communication between shards (each device holds its heads' K and V for every token);
// what crosses devices is one plan image per step (built once, copied to the other engines) and, only
// when the caller asks for it, the shards' outputs gathered onto one device with peer copies.
#include <cstring>

#include "checked.h"
#include "internal.h"
#include "sharded.h"

namespace {

using pkv::fail;

// Both ends of a copy between runtimes must be of one backend: a CPU buffer is host memory, a CUDA one
// may live on another device.
pkv_status check_backends(const pkv_runtime *a, const pkv_runtime *b, const char *func) {
  if (a->backend != b->backend)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: the runtimes are of different backends (CPU and CUDA)", func);
  return PKV_OK;
}

// Rows `pitch` apart, `row_bytes` each, at `offset`: within the buffer, without wrapping.
pkv_status check_rows(const char *what, const pkv_buffer *buf, uint64_t offset, uint64_t pitch, uint64_t row_bytes,
                      uint64_t rows) {
  if (row_bytes > pitch)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: row of %llu bytes is wider than its pitch %llu", what,
                (unsigned long long)row_bytes, (unsigned long long)pitch);
  uint64_t span = 0;
  PKV_TRY(pkv::checked_mul("the rows' span", &span, {rows - 1, pitch}));
  PKV_TRY(pkv::checked_add("the rows' span", span, row_bytes, &span));
  return pkv::check_range(what, offset, span, buf->bytes);
}

// Work already queued on `src_rt`'s own stream (a shard's run) completes before `stream` (of another
// device) goes on: an event on src's device that `stream` waits for. The event is released at once;
// CUDA keeps it until the wait is satisfied.
pkv_status order_after(pkv_runtime *src_rt, cudaStream_t stream) {
  PKV_CUDA_TRY(cudaSetDevice(src_rt->device));
  cudaEvent_t done = nullptr;
  PKV_CUDA_TRY(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  cudaError_t e = cudaEventRecord(done, src_rt->stream);
  if (e == cudaSuccess) e = cudaStreamWaitEvent(stream, done, 0);
  cudaEventDestroy(done);
  if (e != cudaSuccess) return pkv::fail_cuda(e, "cudaEventRecord/cudaStreamWaitEvent", "order_after");
  return PKV_OK;
}

}  // namespace

extern "C" {

pkv_status pkv_runtime_enable_peer_access(pkv_runtime *a, pkv_runtime *b) {
  PKV_API_BEGIN
  PKV_CHECK(a, Runtime);
  PKV_CHECK(b, Runtime);
  PKV_TRY(check_backends(a, b, __func__));
  if (!pkv::on_cuda(a) || a->device == b->device) return PKV_OK;
  int ab = 0, ba = 0;
  PKV_CUDA_TRY(cudaDeviceCanAccessPeer(&ab, a->device, b->device));
  PKV_CUDA_TRY(cudaDeviceCanAccessPeer(&ba, b->device, a->device));
  if (!ab || !ba)
    return fail(PKV_ERR_UNSUPPORTED, "%s: devices %d and %d cannot access each other's memory (no peer path)", __func__,
                a->device, b->device);
  // Plain peer access (no flags): NVLink multicast objects are never created here.
  for (auto [from, to] : {std::pair<int, int>{a->device, b->device}, {b->device, a->device}}) {
    PKV_CUDA_TRY(cudaSetDevice(from));
    cudaError_t e = cudaDeviceEnablePeerAccess(to, 0);
    if (e == cudaErrorPeerAccessAlreadyEnabled) cudaGetLastError();  // enabled earlier: fine
    else if (e != cudaSuccess) return pkv::fail_cuda(e, "cudaDeviceEnablePeerAccess", __func__);
  }
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_buffer_copy_rows(pkv_buffer *dst, uint64_t dst_offset, uint64_t dst_pitch, pkv_buffer *src,
                                uint64_t src_offset, uint64_t src_pitch, uint64_t row_bytes, uint64_t rows,
                                pkv_stream *stream) {
  PKV_API_BEGIN
  PKV_CHECK(src, Buffer);
  PKV_CHECK(dst, Buffer);  // last, so dst's device is current
  if (dst == src) return fail(PKV_ERR_INVALID_ARGUMENT, "%s: dst and src are the same buffer", __func__);
  PKV_TRY(check_backends(dst->rt, src->rt, __func__));
  if (rows == 0 || row_bytes == 0) return PKV_OK;
  PKV_TRY(check_rows("dst", dst, dst_offset, dst_pitch, row_bytes, rows));
  PKV_TRY(check_rows("src", src, src_offset, src_pitch, row_bytes, rows));
  PKV_TRY(pkv::check_stream(dst->rt, stream, __func__));
  // A cross-device copy orders itself after src's runtime stream with an event, which no capture may hold.
  PKV_TRY(pkv::check_not_capturing(dst->rt));
  PKV_TRY(pkv::check_not_capturing(src->rt));
  char *to = static_cast<char *>(dst->ptr) + dst_offset;
  const char *from = static_cast<const char *>(src->ptr) + src_offset;
  if (!pkv::on_cuda(dst->rt)) {
    for (uint64_t r = 0; r < rows; r++) memcpy(to + r * dst_pitch, from + r * src_pitch, row_bytes);
    return PKV_OK;
  }
  cudaStream_t s = pkv::stream_of(dst->rt, stream);
  if (s != src->rt->stream) PKV_TRY(order_after(src->rt, s));
  PKV_CUDA_TRY(cudaSetDevice(dst->rt->device));
  // cudaMemcpyDefault: unified addressing finds both devices; across them it is a peer copy (direct over
  // NVLink once pkv_runtime_enable_peer_access ran, staged by the driver otherwise).
  PKV_CUDA_TRY(cudaMemcpy2DAsync(to, dst_pitch, from, src_pitch, row_bytes, rows, cudaMemcpyDefault, s));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_decode_plan_copy(pkv_decode_engine *src, pkv_decode_engine *dst, pkv_kvpool *dst_pool,
                                pkv_plan_info *info) {
  PKV_API_BEGIN
  PKV_CHECK(src, DecodeEngine);
  return pkv::copy_plan(src, dst, dst_pool, info);  // resolves dst and dst_pool itself (sharded.h)
  PKV_API_END
}

}  // extern "C"
