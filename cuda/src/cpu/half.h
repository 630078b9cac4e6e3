// Host conversions between fp32 and the 16-bit storage types (fp16, bf16), round-to-nearest-even.
#pragma once
#include <cstdint>
#include <cstring>

#include "persistentkv.h"

namespace pkv {

inline float bits_to_float(uint32_t bits) {
  float f;
  memcpy(&f, &bits, 4);
  return f;
}
inline uint32_t float_to_bits(float f) {
  uint32_t bits;
  memcpy(&bits, &f, 4);
  return bits;
}

inline float f16_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  if (exponent == 0x1f) return bits_to_float(sign | 0x7f800000 | (mantissa << 13));  // inf, nan
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    float value = (float)mantissa * 5.9604644775390625e-8f;
    return sign ? -value : value;
  }
  return bits_to_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

inline uint16_t float_to_f16(float f) {
  uint32_t x = float_to_bits(f), sign = (x >> 16) & 0x8000;
  uint32_t abs = x & 0x7fffffff;
  if (abs >= 0x7f800000) return (uint16_t)(sign | 0x7c00 | (abs > 0x7f800000 ? 0x200 : 0));
  if (abs >= 0x477ff000) return (uint16_t)(sign | 0x7c00);  // rounds past the largest half
  if (abs < 0x38800000) {  // subnormal half: round abs / 2^-24 to an integer, ties to even
    float scaled = bits_to_float(abs) * 16777216.0f;
    uint32_t whole = (uint32_t)scaled;
    float frac = scaled - (float)whole;
    if (frac > 0.5f || (frac == 0.5f && (whole & 1))) whole++;
    return (uint16_t)(sign | whole);
  }
  uint32_t rounded = abs + 0xfff + ((abs >> 13) & 1);  // ties to even on the 13 dropped bits
  return (uint16_t)(sign | ((rounded - 0x38000000) >> 13));
}

inline float bf16_to_float(uint16_t h) { return bits_to_float((uint32_t)h << 16); }

inline uint16_t float_to_bf16(float f) {
  uint32_t x = float_to_bits(f);
  if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40);  // keep nan a nan
  return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

inline float load_half(int32_t dtype, uint16_t h) { return dtype == PKV_DTYPE_BF16 ? bf16_to_float(h) : f16_to_float(h); }
inline uint16_t store_half(int32_t dtype, float f) { return dtype == PKV_DTYPE_BF16 ? float_to_bf16(f) : float_to_f16(f); }

}  // namespace pkv
