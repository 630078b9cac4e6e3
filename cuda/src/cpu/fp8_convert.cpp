// The FP8 entry points that need no pool: page sizes for planning a pool's memory, and the host e4m3
// conversions the CPU backend stores with (for tests that check them against the GPU's, and for users
// who read raw pages).
#include "../core/shape.h"
#include "half.h"

extern "C" {

int64_t pkv_kv_layer_page_bytes(int32_t dtype, int32_t num_kv_heads, int32_t page_size, int32_t head_dim) {
  pkv::begin_call(__func__);
  if (pkv::check_shape(__func__, num_kv_heads, num_kv_heads, head_dim, page_size, dtype) != PKV_OK) return 0;
  return pkv::page_format(dtype, num_kv_heads, page_size, head_dim).page_bytes;
}

pkv_status pkv_fp8_e4m3_encode(int64_t n, const float *in, uint8_t *out) {
  PKV_API_BEGIN
  if (n < 0) return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: n = %lld < 0", __func__, (long long)n);
  if (n == 0) return PKV_OK;
  PKV_NOT_NULL(in);
  PKV_NOT_NULL(out);
  for (int64_t i = 0; i < n; i++) out[i] = pkv::float_to_e4m3(in[i]);
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_fp8_e4m3_decode(int64_t n, const uint8_t *in, float *out) {
  PKV_API_BEGIN
  if (n < 0) return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: n = %lld < 0", __func__, (long long)n);
  if (n == 0) return PKV_OK;
  PKV_NOT_NULL(in);
  PKV_NOT_NULL(out);
  for (int64_t i = 0; i < n; i++) out[i] = pkv::e4m3_to_float(in[i]);
  return PKV_OK;
  PKV_API_END
}

}  // extern "C"
