// The GPU entry points for the CPU-only build (zig build -Dgpu=false), where no .cu file is compiled.
// A CPU runtime never calls them and a CUDA runtime cannot be created, so reaching one is a bug in the
// caller; each still answers with a status rather than a missing symbol.
#include "../core/interop.h"
#include "../core/internal.h"
#include "../core/kv_ops.h"
#include "../gpu/decode_launch.h"
#include "../gpu/probe_launch.h"
#include "../gpu/table_deltas.h"

namespace {

pkv_status no_gpu(const char *func) {
  return pkv::fail(PKV_ERR_NO_DEVICE, "%s: this library was built without CUDA (zig build -Dgpu=false)", func);
}

}  // namespace

namespace pkv {

pkv_status launch_decode(int32_t, DecodeBody, int32_t, int32_t, const DecodeParams &, int32_t, cudaStream_t, bool) {
  return no_gpu(__func__);
}
pkv_status decode_blocks_per_sm(int32_t, DecodeBody, int32_t, int32_t, int32_t *) { return no_gpu(__func__); }
pkv_status launch_apply_deltas(const void *, int32_t, int32_t *, int64_t, cudaStream_t) { return no_gpu(__func__); }

pkv_status gpu_scatter_tokens(const pkv_kvpool *, int32_t, int32_t, const int32_t *, const void *, const void *,
                              cudaStream_t) {
  return no_gpu(__func__);
}
pkv_status gpu_gather_tokens(const pkv_kvpool *, int32_t, int32_t, const int32_t *, void *, void *, cudaStream_t) {
  return no_gpu(__func__);
}
pkv_status gpu_gather_raw(const pkv_kvpool *, int32_t, int32_t, const int32_t *, uint8_t *, uint8_t *, float *, float *,
                          cudaStream_t) {
  return no_gpu(__func__);
}
pkv_status gpu_copy_pages(const pkv_kvpool *, PageSpace, PageSpace, int32_t, const int32_t *, const int32_t *,
                          cudaStream_t) {
  return no_gpu(__func__);
}

pkv_status gpu_memory_info(int32_t, uint64_t *, uint64_t *) { return no_gpu(__func__); }
pkv_status gpu_check_range(int32_t, int32_t, uint64_t, uint64_t, const char *) { return no_gpu(__func__); }
pkv_status gpu_check_stream(int32_t, cudaStream_t) { return no_gpu(__func__); }

pkv_status launch_read_stream(const void *, uint64_t, void *, int32_t, cudaStream_t) { return no_gpu(__func__); }
pkv_status launch_flush_read(const void *, uint64_t, void *, int32_t, cudaStream_t) { return no_gpu(__func__); }

}  // namespace pkv
