// Host conversions between fp32 and the storage types (fp16, bf16, e4m3), round-to-nearest-even.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "../core/kv_format.h"

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

// e4m3 ("fn": bias 7, no infinities, 0x7F/0xFF NaN, largest 448) as the GPU's cvt.rn.satfinite.e4m3x2.f32
// converts: nearest, ties to even; magnitudes past 448 (infinities too) saturate to +-448; NaN is 0x7F.
inline uint8_t float_to_e4m3(float f) {
  const uint32_t x = float_to_bits(f), sign = (x >> 24) & 0x80, abs = x & 0x7fffffff;
  if (abs > 0x7f800000) return 0x7f;
  if (abs > 0x43e00000) return (uint8_t)(sign | 0x7e);  // above 448
  if (abs < 0x3c800000) {  // below 2^-6, the smallest normal: a multiple of 2^-9
    const float scaled = bits_to_float(abs) * 512.0f;  // exact, < 8
    uint32_t whole = (uint32_t)scaled;
    const float frac = scaled - (float)whole;
    if (frac > 0.5f || (frac == 0.5f && (whole & 1))) whole++;
    return (uint8_t)(sign | whole);  // 8 is the smallest normal's code
  }
  const uint32_t rounded = abs + 0x7ffff + ((abs >> 20) & 1);  // ties to even on the 20 dropped bits
  return (uint8_t)(sign | ((rounded >> 20) - (120 << 3)));     // the carry may step the exponent
}

inline float e4m3_to_float(uint8_t b) {
  const uint32_t sign = (uint32_t)(b & 0x80) << 24, exponent = (b >> 3) & 15, mantissa = b & 7;
  if (exponent == 15 && mantissa == 7) return bits_to_float(0x7fffffff);
  if (exponent == 0) {
    const float value = (float)mantissa * 0.001953125f;  // 2^-9
    return sign ? -value : value;
  }
  return bits_to_float(sign | ((exponent + 120) << 23) | (mantissa << 20));
}

// 16-bit values of a dtype (an FP8 dtype's values: value_dtype).
inline float load_half(int32_t dtype, uint16_t h) {
  return value_dtype(dtype) == PKV_DTYPE_BF16 ? bf16_to_float(h) : f16_to_float(h);
}
inline uint16_t store_half(int32_t dtype, float f) {
  return value_dtype(dtype) == PKV_DTYPE_BF16 ? float_to_bf16(f) : float_to_f16(f);
}

// One FP8 (token, head) row: d values in, d codes and the scale out (kv_format.h's rule).
inline float quantize_row(int32_t dtype, const uint16_t *values, int32_t d, uint8_t *codes) {
  float amax = 0.f;
  // NaNs never raise amax, as the GPU's fmaxf has it: std::fmax would return NaN for the signalling NaNs
  // that f16 NaNs widen to, and the whole row would get scale 0.
  for (int32_t i = 0; i < d; i++) {
    const float a = std::fabs(load_half(dtype, values[i]));
    if (a > amax) amax = a;
  }
  const float factor = fp8_factor_of(amax);
  for (int32_t i = 0; i < d; i++) codes[i] = float_to_e4m3(load_half(dtype, values[i]) * factor);
  return fp8_scale_of(amax);
}

}  // namespace pkv
