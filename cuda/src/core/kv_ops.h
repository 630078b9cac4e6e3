// Data movement in the KV pool: token scatter/gather and whole-page copies. One interface, two
// implementations: kernels (gpu/kv_ops.cu) and host loops (cpu/kv_ops.cpp).
#pragma once
#include "kvpool.h"

namespace pkv {

// A set of pages addressed as k + layer * layer_stride + index * page_stride (bytes; V likewise):
// the pool itself, or the swap space.
struct PageSpace {
  char *k;
  char *v;
  int64_t layer_stride;
  int64_t page_stride;
};

inline PageSpace pool_pages(const pkv_kvpool *pool) {
  return {static_cast<char *>(pool->k), static_cast<char *>(pool->v), pool->layer_bytes, pool->page_bytes};
}
// Swap slot s holds every layer's K then V page: [slot][layer][k|v][page].
inline PageSpace swap_pages(const pkv_kvpool *pool) {
  char *base = static_cast<char *>(pool->swap_device);
  return {base, base + pool->page_bytes, 2 * pool->page_bytes, pool->swap_slot_bytes};
}

// k, v: [n][num_kv_heads][head_dim] 16-bit values (the pool's value_dtype) in device (GPU) or host (CPU)
// memory; slots likewise. FP8 pools quantize on scatter and dequantize on gather.
pkv_status gpu_scatter_tokens(const pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, const void *k,
                              const void *v, cudaStream_t stream);
pkv_status gpu_gather_tokens(const pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, void *k, void *v,
                             cudaStream_t stream);
pkv_status gpu_copy_pages(const pkv_kvpool *pool, PageSpace src, PageSpace dst, int32_t n, const int32_t *src_index,
                          const int32_t *dst_index, cudaStream_t stream);

// FP8 pools: the stored codes [n][heads][d] and scales [n][heads] of K and V (device or host memory).
pkv_status gpu_gather_raw(const pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, uint8_t *k_codes,
                          uint8_t *v_codes, float *k_scales, float *v_scales, cudaStream_t stream);
void cpu_gather_raw(const pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, uint8_t *k_codes,
                    uint8_t *v_codes, float *k_scales, float *v_scales);

void cpu_scatter_tokens(const pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, const void *k,
                        const void *v);
void cpu_gather_tokens(const pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, void *k, void *v);
void cpu_copy_pages(const pkv_kvpool *pool, PageSpace src, PageSpace dst, int32_t n, const int32_t *src_index,
                    const int32_t *dst_index);

}  // namespace pkv
