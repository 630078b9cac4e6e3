// Host implementations of the KV pool's data movement (CPU backend). FP8 pools quantize each (token,
// head) row on write and dequantize on read with half.h's conversions, bit for bit as the kernels do.
#include <cstring>

#include "../core/kv_ops.h"
#include "half.h"

namespace pkv {

namespace {
// Element index of token slot `slot`, kv head `h`, within its page; and the page's byte offset.
struct RowAt {
  int64_t page_offset;  // bytes from the layer's start to the page
  int64_t row;          // the (head, slot) row within the page
};
RowAt row_at(const pkv_kvpool *pool, int32_t slot, int32_t h) {
  const pkv_kv_config &c = pool->config;
  const int64_t page = slot / c.page_size, offset = slot % c.page_size;
  return {page * pool->page_bytes, (int64_t)h * c.page_size + offset};
}

// FP8 pages: a row's codes and its scale.
uint8_t *codes_of(char *layer, const pkv_kvpool *pool, RowAt at) {
  return reinterpret_cast<uint8_t *>(layer + at.page_offset) + at.row * pool->config.head_dim;
}
float *scale_of(char *layer, const pkv_kvpool *pool, RowAt at) {
  return reinterpret_cast<float *>(layer + at.page_offset + pool->code_bytes) + at.row;
}

// Every (token, head) row of a call: f(t, h, row position in the pool, index of the flat row).
template <class F>
void each_row(const pkv_kvpool *pool, int32_t n, const int32_t *slots, F f) {
  for (int32_t t = 0; t < n; t++)
    for (int32_t h = 0; h < pool->config.num_kv_heads; h++)
      f(row_at(pool, slots[t], h), (int64_t)t * pool->config.num_kv_heads + h);
}
}  // namespace

void cpu_scatter_tokens(const pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, const void *k,
                        const void *v) {
  const int32_t d = pool->config.head_dim, dtype = pool->config.dtype;
  char *kl = layer_k(pool, layer), *vl = layer_v(pool, layer);
  const auto *kin = static_cast<const uint16_t *>(k), *vin = static_cast<const uint16_t *>(v);
  each_row(pool, n, slots, [&](RowAt at, int64_t flat) {
    if (is_fp8(dtype)) {
      *scale_of(kl, pool, at) = quantize_row(dtype, kin + flat * d, d, codes_of(kl, pool, at));
      *scale_of(vl, pool, at) = quantize_row(dtype, vin + flat * d, d, codes_of(vl, pool, at));
      return;
    }
    const int64_t dst = at.page_offset + at.row * d * 2;
    memcpy(kl + dst, kin + flat * d, d * 2);
    memcpy(vl + dst, vin + flat * d, d * 2);
  });
}

void cpu_gather_tokens(const pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, void *k, void *v) {
  const int32_t d = pool->config.head_dim, dtype = pool->config.dtype;
  char *kl = layer_k(pool, layer), *vl = layer_v(pool, layer);
  auto *kout = static_cast<uint16_t *>(k), *vout = static_cast<uint16_t *>(v);
  each_row(pool, n, slots, [&](RowAt at, int64_t flat) {
    if (is_fp8(dtype)) {
      for (auto [layer_base, out] : {std::pair{kl, kout}, std::pair{vl, vout}}) {
        const uint8_t *codes = codes_of(layer_base, pool, at);
        const float scale = *scale_of(layer_base, pool, at);
        for (int32_t i = 0; i < d; i++) out[flat * d + i] = store_half(dtype, e4m3_to_float(codes[i]) * scale);
      }
      return;
    }
    const int64_t src = at.page_offset + at.row * d * 2;
    memcpy(kout + flat * d, kl + src, d * 2);
    memcpy(vout + flat * d, vl + src, d * 2);
  });
}

void cpu_gather_raw(const pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, uint8_t *k_codes,
                    uint8_t *v_codes, float *k_scales, float *v_scales) {
  const int32_t d = pool->config.head_dim;
  char *kl = layer_k(pool, layer), *vl = layer_v(pool, layer);
  each_row(pool, n, slots, [&](RowAt at, int64_t flat) {
    memcpy(k_codes + flat * d, codes_of(kl, pool, at), d);
    memcpy(v_codes + flat * d, codes_of(vl, pool, at), d);
    k_scales[flat] = *scale_of(kl, pool, at);
    v_scales[flat] = *scale_of(vl, pool, at);
  });
}

void cpu_copy_pages(const pkv_kvpool *pool, PageSpace src, PageSpace dst, int32_t n, const int32_t *src_index,
                    const int32_t *dst_index) {
  for (int32_t i = 0; i < n; i++)
    for (int32_t layer = 0; layer < pool->config.num_layers; layer++) {
      int64_t s = layer * src.layer_stride + src_index[i] * src.page_stride;
      int64_t d = layer * dst.layer_stride + dst_index[i] * dst.page_stride;
      memcpy(dst.k + d, src.k + s, pool->page_bytes);
      memcpy(dst.v + d, src.v + s, pool->page_bytes);
    }
}

}  // namespace pkv
