// Host implementations of the KV pool's data movement (CPU backend).
#include <cstring>

#include "../core/kv_ops.h"

namespace pkv {

namespace {
// Byte offset of token slot `slot`, kv head `h`, in one layer's pages.
int64_t token_offset(const pkv_kvpool *pool, int32_t slot, int32_t h) {
  const pkv_kv_config &c = pool->config;
  int64_t page = slot / c.page_size, offset = slot % c.page_size;
  return (((page * c.num_kv_heads + h) * c.page_size + offset) * c.head_dim) * pool->elem_bytes;
}
}  // namespace

void cpu_scatter_tokens(const pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, const void *k,
                        const void *v) {
  const int64_t row = (int64_t)pool->config.head_dim * pool->elem_bytes;
  char *kl = layer_k(pool, layer), *vl = layer_v(pool, layer);
  for (int32_t t = 0; t < n; t++)
    for (int32_t h = 0; h < pool->config.num_kv_heads; h++) {
      int64_t src = ((int64_t)t * pool->config.num_kv_heads + h) * row, dst = token_offset(pool, slots[t], h);
      memcpy(kl + dst, static_cast<const char *>(k) + src, row);
      memcpy(vl + dst, static_cast<const char *>(v) + src, row);
    }
}

void cpu_gather_tokens(const pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, void *k, void *v) {
  const int64_t row = (int64_t)pool->config.head_dim * pool->elem_bytes;
  const char *kl = layer_k(pool, layer), *vl = layer_v(pool, layer);
  for (int32_t t = 0; t < n; t++)
    for (int32_t h = 0; h < pool->config.num_kv_heads; h++) {
      int64_t dst = ((int64_t)t * pool->config.num_kv_heads + h) * row, src = token_offset(pool, slots[t], h);
      memcpy(static_cast<char *>(k) + dst, kl + src, row);
      memcpy(static_cast<char *>(v) + dst, vl + src, row);
    }
}

void cpu_copy_pages(const pkv_kvpool *pool, PageSpace src, PageSpace dst, int32_t n, const int32_t *src_index,
                    const int32_t *dst_index) {
  const int64_t page_bytes = pool->page_elems * pool->elem_bytes;
  for (int32_t i = 0; i < n; i++)
    for (int32_t layer = 0; layer < pool->config.num_layers; layer++) {
      int64_t s = layer * src.layer_stride + src_index[i] * src.page_stride;
      int64_t d = layer * dst.layer_stride + dst_index[i] * dst.page_stride;
      memcpy(dst.k + d, src.k + s, page_bytes);
      memcpy(dst.v + d, src.v + s, page_bytes);
    }
}

}  // namespace pkv
