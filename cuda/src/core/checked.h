// Checked size arithmetic: the one place where sizes, counts and offsets that could exceed 64 bits are
// multiplied, added and range-checked. An overflow is an error that names the call (fail adds it) and
// the quantity, never a wrapped size that a later range check would then trust.
#pragma once
#include <cstdint>
#include <initializer_list>

#include "internal.h"

namespace pkv {

// Every checked result also fits int64_t, so the signed fields that hold sizes can take it.
constexpr uint64_t kMaxSize = (uint64_t)INT64_MAX;

// *out = product of `factors` (all >= 0), or PKV_ERR_INVALID_ARGUMENT "<what> overflows" when it
// exceeds kMaxSize.
inline pkv_status checked_mul(const char *what, uint64_t *out, std::initializer_list<uint64_t> factors) {
  uint64_t product = 1;
  for (uint64_t f : factors)
    if (__builtin_mul_overflow(product, f, &product) || product > kMaxSize)
      return fail(PKV_ERR_INVALID_ARGUMENT, "%s overflows 63 bits", what);
  *out = product;
  return PKV_OK;
}

inline pkv_status checked_mul(const char *what, int64_t *out, std::initializer_list<uint64_t> factors) {
  uint64_t product = 0;
  PKV_TRY(checked_mul(what, &product, factors));
  *out = (int64_t)product;
  return PKV_OK;
}

inline pkv_status checked_add(const char *what, uint64_t a, uint64_t b, uint64_t *out) {
  if (__builtin_add_overflow(a, b, out) || *out > kMaxSize)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s overflows 63 bits", what);
  return PKV_OK;
}

// `bytes` at `offset` lie within an object of `size` bytes (written so that no sum can wrap).
inline pkv_status check_range(const char *what, uint64_t offset, uint64_t bytes, uint64_t size) {
  if (offset > size || bytes > size - offset)
    return fail(PKV_ERR_OUT_OF_RANGE, "%s: range [%llu, %llu + %llu) exceeds the %llu bytes it lies in", what,
                (unsigned long long)offset, (unsigned long long)offset, (unsigned long long)bytes,
                (unsigned long long)size);
  return PKV_OK;
}

}  // namespace pkv
