// How a pool's dtype stores K and V: the bytes of an element, the 16-bit type of the values that enter and
// leave, and the FP8 page layout and quantization rule (persistentkv.h, "FP8 KV storage"). The one owner of
// these facts for the pool, the kernels and the CPU backend; host and device code alike.
#pragma once
#include <cstdint>

#include "persistentkv.h"

#if defined(__CUDACC__)
#define PKV_HD __host__ __device__ __forceinline__
#else
#define PKV_HD inline
#endif

namespace pkv {

PKV_HD bool is_fp8(int32_t dtype) { return dtype == PKV_DTYPE_FP8_E4M3 || dtype == PKV_DTYPE_FP8_E4M3_BF16; }
// The 16-bit type of values written, read, and of q and out.
PKV_HD int32_t value_dtype(int32_t dtype) {
  return dtype == PKV_DTYPE_FP8_E4M3 ? PKV_DTYPE_F16 : dtype == PKV_DTYPE_FP8_E4M3_BF16 ? PKV_DTYPE_BF16 : dtype;
}

constexpr float kFp8Max = 448.0f;  // the largest finite e4m3 value

// One page of one layer, K or V. FP8: codes [head][slot][d], then float scales [head][slot], padded to 16
// bytes so that every page (and every (page, head) run of codes, page_size * d >= 64 bytes) stays aligned.
struct PageFormat {
  int64_t code_bytes;  // FP8: the codes; 16-bit dtypes: the whole page
  int64_t page_bytes;
};
PKV_HD PageFormat page_format(int32_t dtype, int64_t heads, int64_t page_size, int64_t head_dim) {
  const int64_t elems = heads * page_size * head_dim;
  if (!is_fp8(dtype)) return {2 * elems, 2 * elems};
  return {elems, elems + ((heads * page_size * 4 + 15) & ~(int64_t)15)};
}
// Bytes a decode step reads per token per KV head, K and V: codes and scales for FP8.
PKV_HD int64_t kv_row_bytes(int32_t dtype, int64_t head_dim) { return is_fp8(dtype) ? 2 * (head_dim + 4) : 4 * head_dim; }

// The quantization of one (token, head) row with largest magnitude amax: stored scale, and the factor
// its values are multiplied by before rounding to e4m3. Both backends compute these two IEEE operations,
// so they store the same scale and codes. A zero row (or one of NaNs only) gets scale 0.
PKV_HD float fp8_scale_of(float amax) { return amax > 0.f ? amax / kFp8Max : 0.f; }
PKV_HD float fp8_factor_of(float amax) { return amax > 0.f ? kFp8Max / amax : 0.f; }

}  // namespace pkv
