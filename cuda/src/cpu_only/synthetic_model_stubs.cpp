// The synthetic model's GPU launchers for the CPU-only build (zig build -Dgpu=false), where
// gpu/synthetic_model.cu is not compiled; a CPU runtime never reaches them (see gpu_stubs.cpp).
#include "../core/internal.h"
#include "../core/synthetic_model.h"

namespace pkv {

namespace {
pkv_status no_gpu(const char *func) {
  return fail(PKV_ERR_NO_DEVICE, "%s: this library was built without CUDA (zig build -Dgpu=false)", func);
}
}  // namespace

pkv_status gpu_synthetic_forward(const SyntheticForward &, cudaStream_t) { return no_gpu(__func__); }
pkv_status gpu_synthetic_prefill(const SyntheticPrefill &, cudaStream_t) { return no_gpu(__func__); }
pkv_status gpu_synthetic_sample(const SyntheticSample &, cudaStream_t) { return no_gpu(__func__); }

}  // namespace pkv
