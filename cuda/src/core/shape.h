// Validation of attention shapes shared by the reference, the KV pool and the decode engine.
#pragma once
#include "internal.h"
#include "kv_format.h"

namespace pkv {

inline bool is_power_of_two(int32_t x) { return x > 0 && (x & (x - 1)) == 0; }

// Checks head dim, page size, dtype and head counts; `func` prefixes the message.
inline pkv_status check_shape(const char *func, int32_t num_qo_heads, int32_t num_kv_heads, int32_t head_dim,
                              int32_t page_size, int32_t dtype) {
  if (head_dim != 64 && head_dim != 128 && head_dim != 256)
    return fail(PKV_ERR_UNSUPPORTED, "%s: head_dim %d is not 64, 128 or 256", func, head_dim);
  if (!is_power_of_two(page_size) || page_size > 256)
    return fail(PKV_ERR_UNSUPPORTED, "%s: page_size %d is not a power of two in 1..256", func, page_size);
  if (dtype != PKV_DTYPE_F16 && dtype != PKV_DTYPE_BF16 && !is_fp8(dtype))
    return fail(PKV_ERR_UNSUPPORTED, "%s: dtype %d is not F16 (0), BF16 (1), FP8_E4M3 (2) or FP8_E4M3_BF16 (3)", func,
                dtype);
  if (num_kv_heads < 1 || num_kv_heads > 256)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: num_kv_heads %d not in 1..256", func, num_kv_heads);
  if (num_qo_heads < num_kv_heads || num_qo_heads % num_kv_heads != 0)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: num_qo_heads %d is not a multiple of num_kv_heads %d", func,
                num_qo_heads, num_kv_heads);
  if (num_qo_heads / num_kv_heads > 16)
    return fail(PKV_ERR_UNSUPPORTED, "%s: group size %d exceeds 16", func, num_qo_heads / num_kv_heads);
  return PKV_OK;
}

}  // namespace pkv
