// The paged KV pool's C entry points: lifetime, block-table addresses, token writes and reads, page
// copies and swapping. Argument checks live here; data movement is in kv_ops (GPU and CPU).
#include <climits>
#include <cstdlib>
#include <cstring>
#include <unordered_set>

#include "checked.h"
#include "kv_format.h"
#include "kv_ops.h"
#include "shape.h"

namespace {

void free_pool(pkv_kvpool *pool) {
  pkv_runtime *rt = pool->rt;
  if (pkv::on_cuda(rt)) cudaStreamSynchronize(rt->stream);
  pkv::raw_free(rt, PKV_MEM_DEVICE, pool->k);
  pkv::raw_free(rt, PKV_MEM_DEVICE, pool->v);
  pkv::raw_free(rt, PKV_MEM_PINNED, pool->table_host);
  pkv::raw_free(rt, PKV_MEM_PINNED, pool->dirty_from);
  pkv::raw_free(rt, PKV_MEM_DEVICE, pool->table_device);
  pkv::raw_free(rt, PKV_MEM_PINNED, pool->swap);
  pkv::raw_free(rt, PKV_MEM_DEVICE, pool->index_device);
  pkv::raw_free(rt, PKV_MEM_DEVICE, pool->data_device);
  delete pool;
}

void destroy_pool(void *object) {
  auto *pool = static_cast<pkv_kvpool *>(object);
  pkv::disown(pool->rt, pool);
  free_pool(pool);
}

pkv_status check_config(const pkv_kv_config *c) {
  const char *f = pkv::current_call();  // pkv_kvpool_create or pkv_kvpool_wrap
  PKV_TRY(pkv::check_shape(f, c->num_kv_heads, c->num_kv_heads, c->head_dim, c->page_size, c->dtype));
  if (c->num_layers < 1 || c->num_layers > 4096)
    return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: num_layers %d not in 1..4096", f, c->num_layers);
  if (c->num_pages < 1) return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: num_pages %d < 1", f, c->num_pages);
  if ((int64_t)c->num_pages * c->page_size > INT32_MAX)
    return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: %d pages of %d slots exceed the int32 slot range", f, c->num_pages,
                     c->page_size);
  if (c->max_sequences < 1 || c->max_pages_per_sequence < 1)
    return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: block table %d x %d has no room", f, c->max_sequences,
                     c->max_pages_per_sequence);
  if ((int64_t)c->max_sequences * c->max_pages_per_sequence > (INT32_MAX >> 2))
    return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: block table %d x %d is too large", f, c->max_sequences,
                     c->max_pages_per_sequence);
  if (c->swap_pages < 0) return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: swap_pages %d < 0", f, c->swap_pages);
  if (c->reserved != 0) return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: reserved field must be 0", f);
  return PKV_OK;
}

// Grows a device staging allocation; waits for the stream first, since queued work may still read it.
pkv_status ensure_staging(pkv_kvpool *pool, void **ptr, int64_t *capacity, int64_t bytes) {
  if (bytes <= *capacity) return PKV_OK;
  int64_t grown = bytes < 2 * *capacity ? 2 * *capacity : bytes;
  if (pkv::on_cuda(pool->rt)) PKV_CUDA_TRY(cudaStreamSynchronize(pool->rt->stream));
  pkv::raw_free(pool->rt, PKV_MEM_DEVICE, *ptr);
  *ptr = nullptr;
  *capacity = 0;
  PKV_TRY(pkv::raw_alloc(pool->rt, PKV_MEM_DEVICE, grown, ptr));
  *capacity = grown;
  return PKV_OK;
}

// Copies host int32 lists into device index staging; returns the device copy of each.
pkv_status stage_indices(pkv_kvpool *pool, int32_t n, const int32_t *a, const int32_t *b, const int32_t **a_dev,
                         const int32_t **b_dev) {
  int64_t bytes = (int64_t)n * 4;
  int64_t capacity_bytes = pool->index_capacity * 4;
  void *ptr = pool->index_device;
  PKV_TRY(ensure_staging(pool, &ptr, &capacity_bytes, b ? 2 * bytes : bytes));
  pool->index_device = static_cast<int32_t *>(ptr);
  pool->index_capacity = capacity_bytes / 4;
  PKV_CUDA_TRY(cudaMemcpyAsync(pool->index_device, a, bytes, cudaMemcpyHostToDevice, pool->rt->stream));
  *a_dev = pool->index_device;
  if (b) {
    PKV_CUDA_TRY(cudaMemcpyAsync(pool->index_device + n, b, bytes, cudaMemcpyHostToDevice, pool->rt->stream));
    *b_dev = pool->index_device + n;
  }
  return PKV_OK;
}

pkv_status check_layer(const pkv_kvpool *pool, int32_t layer, const char *func) {
  if (layer < 0 || layer >= pool->config.num_layers)
    return pkv::fail(PKV_ERR_OUT_OF_RANGE, "%s: layer %d outside 0..%d", func, layer, pool->config.num_layers - 1);
  return PKV_OK;
}

pkv_status check_slots(const pkv_kvpool *pool, int32_t n, const int32_t *slots, const char *func) {
  if (n < 0) return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: n = %d < 0", func, n);
  if (n > 0 && !slots) return pkv::fail(PKV_ERR_NULL_POINTER, "%s: slots is NULL", func);
  const int64_t limit = (int64_t)pool->config.num_pages * pool->config.page_size;
  for (int32_t i = 0; i < n; i++)
    if (slots[i] < 0 || slots[i] >= limit)
      return pkv::fail(PKV_ERR_OUT_OF_RANGE, "%s: slots[%d] = %d outside 0..%lld", func, i, slots[i],
                       (long long)limit - 1);
  return PKV_OK;
}

pkv_status check_ids(int32_t n, const int32_t *ids, int32_t limit, const char *what, const char *func) {
  if (n > 0 && !ids) return pkv::fail(PKV_ERR_NULL_POINTER, "%s: %s is NULL", func, what);
  for (int32_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= limit)
      return pkv::fail(PKV_ERR_OUT_OF_RANGE, "%s: %s[%d] = %d outside 0..%d", func, what, i, ids[i], limit - 1);
  return PKV_OK;
}

// The checks shared by host-array writes and reads of n tokens.
pkv_status check_token_io(const pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, const void *k,
                          const void *v, const char *func) {
  PKV_TRY(check_layer(pool, layer, func));
  PKV_TRY(check_slots(pool, n, slots, func));
  if (n > 0 && (!k || !v)) return pkv::fail(PKV_ERR_NULL_POINTER, "%s: %s is NULL", func, k ? "v" : "k");
  return PKV_OK;
}

// Moves n whole pages between two page spaces, on the GPU or the host.
pkv_status move_pages(pkv_kvpool *pool, pkv::PageSpace src, pkv::PageSpace dst, int32_t n, const int32_t *src_index,
                      const int32_t *dst_index) {
  if (n == 0) return PKV_OK;
  if (!pkv::on_cuda(pool->rt)) {
    pkv::cpu_copy_pages(pool, src, dst, n, src_index, dst_index);
    return PKV_OK;
  }
  const int32_t *src_dev = nullptr, *dst_dev = nullptr;
  PKV_TRY(stage_indices(pool, n, src_index, dst_index, &src_dev, &dst_dev));
  return pkv::gpu_copy_pages(pool, src, dst, n, src_dev, dst_dev, pool->rt->stream);
}

// Bytes of n tokens' K (or V) values (16-bit for every dtype): at most 2^31 x 256 heads x 256 dims x 2
// bytes = 2^48, no overflow.
int64_t token_bytes(const pkv_kvpool *pool, int32_t n) {
  return (int64_t)n * pool->config.num_kv_heads * pool->config.head_dim * 2;
}

// Swaps move pages between two homes: a page or slot named twice in one call would be written twice
// (two pages into one slot) or leave the cache layer's map of pages ambiguous (one slot into two pages).
pkv_status check_distinct(int32_t n, const int32_t *ids, const char *what, const char *func) {
  std::unordered_set<int32_t> seen;
  for (int32_t i = 0; i < n; i++)
    if (!seen.insert(ids[i]).second)
      return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: %s[%d] = %d is repeated", func, what, i, ids[i]);
  return PKV_OK;
}

// The checks of a swap of n pages between the pool and its swap space, all before anything moves.
pkv_status check_swap(const pkv_kvpool *pool, int32_t n, const int32_t *pages, const int32_t *swap_slots,
                      const char *func) {
  if (n < 0) return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: n = %d < 0", func, n);
  if (n > 0 && pool->config.swap_pages == 0)
    return pkv::fail(PKV_ERR_SWAP_FULL, "%s: the pool was created without swap space", func);
  PKV_TRY(check_ids(n, pages, pool->config.num_pages, "pages", func));
  PKV_TRY(check_ids(n, swap_slots, pool->config.swap_pages, "swap_slots", func));
  PKV_TRY(check_distinct(n, pages, "pages", func));
  return check_distinct(n, swap_slots, "swap_slots", func);
}

// Byte sizes of a pool's allocations, each product checked: a configuration whose pool would not fit
// 63 bits is an error, not a short allocation.
struct PoolSizes {
  int64_t page_elems, layer_elems, page_bytes, code_bytes, layer_bytes, pool_bytes, swap_slot_bytes, swap_bytes,
      table_entries;
};

// A page is at most 256 heads x 256 slots x 256 dims x 2 bytes = 2^25 bytes: page_format cannot overflow.
pkv_status pool_sizes(const pkv_kv_config *c, PoolSizes *z) {
  PKV_TRY(pkv::checked_mul("page elements (kv heads x page size x head dim)", &z->page_elems,
                           {(uint64_t)c->num_kv_heads, (uint64_t)c->page_size, (uint64_t)c->head_dim}));
  PKV_TRY(pkv::checked_mul("layer elements (pages x page elements)", &z->layer_elems,
                           {(uint64_t)c->num_pages, (uint64_t)z->page_elems}));
  const pkv::PageFormat format = pkv::page_format(c->dtype, c->num_kv_heads, c->page_size, c->head_dim);
  z->page_bytes = format.page_bytes;
  z->code_bytes = format.code_bytes;
  PKV_TRY(pkv::checked_mul("layer bytes (pages x page bytes)", &z->layer_bytes,
                           {(uint64_t)c->num_pages, (uint64_t)z->page_bytes}));
  PKV_TRY(pkv::checked_mul("pool bytes (layers x layer bytes)", &z->pool_bytes,
                           {(uint64_t)c->num_layers, (uint64_t)z->layer_bytes}));
  PKV_TRY(pkv::checked_mul("swap slot bytes (layers x K and V x page bytes)", &z->swap_slot_bytes,
                           {(uint64_t)c->num_layers, 2, (uint64_t)z->page_bytes}));
  PKV_TRY(pkv::checked_mul("swap bytes (swap pages x slot bytes)", &z->swap_bytes,
                           {(uint64_t)c->swap_pages, (uint64_t)z->swap_slot_bytes}));
  PKV_TRY(pkv::checked_mul("block table entries (rows x width)", &z->table_entries,
                           {(uint64_t)c->max_sequences, (uint64_t)c->max_pages_per_sequence}));
  return PKV_OK;
}

// Device staging for a host-array write or read of n tokens: the slot list, and room for their K and V.
pkv_status stage_tokens(pkv_kvpool *pool, int32_t n, const int32_t *slots, const int32_t **slots_dev, char **k,
                        char **v) {
  const int64_t bytes = token_bytes(pool, n);
  PKV_TRY(stage_indices(pool, n, slots, nullptr, slots_dev, nullptr));
  PKV_TRY(ensure_staging(pool, &pool->data_device, &pool->data_capacity, 2 * bytes));
  *k = static_cast<char *>(pool->data_device);
  *v = *k + bytes;
  return PKV_OK;
}

}  // namespace

namespace pkv {
pkv_status check_pool_config(const pkv_kv_config *config) { return check_config(config); }
void free_pool_memory(pkv_kvpool *pool) { free_pool(pool); }
}  // namespace pkv

extern "C" {

pkv_status pkv_kvpool_create(pkv_runtime *rt, const pkv_kv_config *config, pkv_kvpool **out) {
  PKV_API_BEGIN
  PKV_CHECK(rt, Runtime);
  PKV_NOT_NULL(config);
  PKV_NOT_NULL(out);
  *out = nullptr;
  PKV_TRY(check_config(config));
  PKV_TRY(pkv::check_not_capturing(rt));
  PoolSizes z;
  PKV_TRY(pool_sizes(config, &z));
  auto *pool = new pkv_kvpool();
  pool->rt = rt;
  pool->config = *config;
  pool->elem_bytes = pkv::is_fp8(config->dtype) ? 1 : 2;
  pool->page_elems = z.page_elems;
  pool->layer_elems = z.layer_elems;
  pool->code_bytes = z.code_bytes;
  pool->page_bytes = z.page_bytes;
  pool->layer_bytes = z.layer_bytes;
  pool->swap_slot_bytes = z.swap_slot_bytes;
  const int64_t pool_bytes = z.pool_bytes, table_entries = z.table_entries;
  pkv_status s = pkv::raw_alloc(rt, PKV_MEM_DEVICE, pool_bytes, &pool->k);
  if (s == PKV_OK) s = pkv::raw_alloc(rt, PKV_MEM_DEVICE, pool_bytes, &pool->v);
  void *table = nullptr, *dirty = nullptr, *device_table = nullptr;
  if (s == PKV_OK) s = pkv::raw_alloc(rt, PKV_MEM_PINNED, table_entries * 4, &table);
  if (s == PKV_OK) s = pkv::raw_alloc(rt, PKV_MEM_PINNED, (int64_t)config->max_sequences * 4, &dirty);
  if (s == PKV_OK) s = pkv::raw_alloc(rt, PKV_MEM_DEVICE, table_entries * 4, &device_table);
  pool->table_host = static_cast<int32_t *>(table);
  pool->dirty_from = static_cast<int32_t *>(dirty);
  pool->table_device = static_cast<int32_t *>(device_table);
  if (s == PKV_OK) {
    memset(pool->table_host, 0, table_entries * 4);
    for (int32_t r = 0; r < config->max_sequences; r++) pool->dirty_from[r] = INT32_MAX;
    // Every device-table entry is a valid page id from the start (0), and later only validated deltas
    // change it: a run can never read a page outside the pool.
    if (pkv::on_cuda(rt)) {
      cudaError_t e = cudaMemsetAsync(pool->table_device, 0, table_entries * 4, rt->stream);
      if (e != cudaSuccess) s = pkv::fail_cuda(e, "cudaMemsetAsync", "pkv_kvpool_create");
    } else {
      memset(pool->table_device, 0, table_entries * 4);
    }
  }
  if (s == PKV_OK && config->swap_pages > 0) {
    // Pinned like any host buffer; the GPU reads and writes it in place over the bus (UVA mapping).
    s = pkv::raw_alloc(rt, PKV_MEM_PINNED, z.swap_bytes, &pool->swap);
    pool->swap_device = pool->swap;
    if (s == PKV_OK && pkv::on_cuda(rt)) {
      cudaError_t e = cudaHostGetDevicePointer(&pool->swap_device, pool->swap, 0);
      if (e != cudaSuccess) s = pkv::fail_cuda(e, "cudaHostGetDevicePointer", "pkv_kvpool_create");
    }
  }
  if (s != PKV_OK) {
    free_pool(pool);
    return s;
  }
  *out = pkv::handle_of<pkv_kvpool>(pkv::adopt(rt, pool, pkv::Kind::KvPool, destroy_pool));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_kvpool_destroy(pkv_kvpool *pool) {
  PKV_API_BEGIN
  PKV_CHECK(pool, KvPool);
  PKV_TRY(pkv::check_not_capturing(pool->rt));
  destroy_pool(pool);
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_kvpool_table_addresses(pkv_kvpool *pool, uint64_t *block_table, uint64_t *dirty_from) {
  PKV_API_BEGIN
  PKV_CHECK(pool, KvPool);
  PKV_NOT_NULL(block_table);
  PKV_NOT_NULL(dirty_from);
  *block_table = (uint64_t)(uintptr_t)pool->table_host;
  *dirty_from = (uint64_t)(uintptr_t)pool->dirty_from;
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_kvpool_layer_addresses(pkv_kvpool *pool, int32_t layer, uint64_t *k, uint64_t *v) {
  PKV_API_BEGIN
  PKV_CHECK(pool, KvPool);
  PKV_NOT_NULL(k);
  PKV_NOT_NULL(v);
  PKV_TRY(check_layer(pool, layer, __func__));
  *k = (uint64_t)(uintptr_t)pkv::layer_k(pool, layer);
  *v = (uint64_t)(uintptr_t)pkv::layer_v(pool, layer);
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_kvpool_write(pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, const void *k,
                            const void *v) {
  PKV_API_BEGIN
  PKV_CHECK(pool, KvPool);
  PKV_TRY(pkv::check_not_capturing(pool->rt));
  PKV_TRY(check_token_io(pool, layer, n, slots, k, v, __func__));
  if (n == 0) return PKV_OK;
  if (!pkv::on_cuda(pool->rt)) {
    pkv::cpu_scatter_tokens(pool, layer, n, slots, k, v);
    return PKV_OK;
  }
  const int64_t bytes = token_bytes(pool, n);
  const int32_t *slots_dev = nullptr;
  char *kd = nullptr, *vd = nullptr;
  PKV_TRY(stage_tokens(pool, n, slots, &slots_dev, &kd, &vd));
  // From pageable memory the copy returns once the source is staged, so the caller may reuse k and v.
  PKV_CUDA_TRY(cudaMemcpyAsync(kd, k, bytes, cudaMemcpyHostToDevice, pool->rt->stream));
  PKV_CUDA_TRY(cudaMemcpyAsync(vd, v, bytes, cudaMemcpyHostToDevice, pool->rt->stream));
  return pkv::gpu_scatter_tokens(pool, layer, n, slots_dev, kd, vd, pool->rt->stream);
  PKV_API_END
}

pkv_status pkv_kvpool_write_device(pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, pkv_buffer *k,
                                   uint64_t k_offset, pkv_buffer *v, uint64_t v_offset) {
  PKV_API_BEGIN
  PKV_CHECK(pool, KvPool);
  PKV_TRY(pkv::check_not_capturing(pool->rt));
  PKV_CHECK(k, Buffer);
  PKV_CHECK(v, Buffer);
  PKV_TRY(check_layer(pool, layer, __func__));
  PKV_TRY(check_slots(pool, n, slots, __func__));
  if (k->rt != pool->rt || v->rt != pool->rt)
    return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: buffers belong to another runtime", __func__);
  const uint64_t bytes = (uint64_t)token_bytes(pool, n);
  for (auto [buf, offset, name] : {std::tuple{k, k_offset, "k"}, std::tuple{v, v_offset, "v"}}) {
    PKV_TRY(pkv::check_range(name, offset, bytes, buf->bytes));
    if (offset % 16 != 0)
      return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: %s offset %llu is not 16-byte aligned", __func__, name,
                       (unsigned long long)offset);
  }
  if (n == 0) return PKV_OK;
  const char *kp = static_cast<const char *>(k->ptr) + k_offset, *vp = static_cast<const char *>(v->ptr) + v_offset;
  if (!pkv::on_cuda(pool->rt)) {
    pkv::cpu_scatter_tokens(pool, layer, n, slots, kp, vp);
    return PKV_OK;
  }
  const int32_t *slots_dev = nullptr;
  PKV_TRY(stage_indices(pool, n, slots, nullptr, &slots_dev, nullptr));
  return pkv::gpu_scatter_tokens(pool, layer, n, slots_dev, kp, vp, pool->rt->stream);
  PKV_API_END
}

pkv_status pkv_kvpool_read(pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, void *k, void *v) {
  PKV_API_BEGIN
  PKV_CHECK(pool, KvPool);
  PKV_TRY(pkv::check_not_capturing(pool->rt));
  PKV_TRY(check_token_io(pool, layer, n, slots, k, v, __func__));
  if (n == 0) return PKV_OK;
  if (!pkv::on_cuda(pool->rt)) {
    pkv::cpu_gather_tokens(pool, layer, n, slots, k, v);
    return PKV_OK;
  }
  const int64_t bytes = token_bytes(pool, n);
  const int32_t *slots_dev = nullptr;
  char *kd = nullptr, *vd = nullptr;
  PKV_TRY(stage_tokens(pool, n, slots, &slots_dev, &kd, &vd));
  PKV_TRY(pkv::gpu_gather_tokens(pool, layer, n, slots_dev, kd, vd, pool->rt->stream));
  PKV_CUDA_TRY(cudaMemcpyAsync(k, kd, bytes, cudaMemcpyDeviceToHost, pool->rt->stream));
  PKV_CUDA_TRY(cudaMemcpyAsync(v, vd, bytes, cudaMemcpyDeviceToHost, pool->rt->stream));
  PKV_CUDA_TRY(cudaStreamSynchronize(pool->rt->stream));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_kvpool_read_raw(pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, uint8_t *k_codes,
                               uint8_t *v_codes, float *k_scales, float *v_scales) {
  PKV_API_BEGIN
  PKV_CHECK(pool, KvPool);
  PKV_TRY(pkv::check_not_capturing(pool->rt));
  if (!pkv::is_fp8(pool->config.dtype))
    return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: the pool's dtype %d stores no codes and scales (FP8 pools only)",
                     __func__, pool->config.dtype);
  PKV_TRY(check_token_io(pool, layer, n, slots, k_codes, v_codes, __func__));
  if (n > 0 && (!k_scales || !v_scales))
    return pkv::fail(PKV_ERR_NULL_POINTER, "%s: %s is NULL", __func__, k_scales ? "v_scales" : "k_scales");
  if (n == 0) return PKV_OK;
  if (!pkv::on_cuda(pool->rt)) {
    pkv::cpu_gather_raw(pool, layer, n, slots, k_codes, v_codes, k_scales, v_scales);
    return PKV_OK;
  }
  // Staging as a read of n tokens: codes and scales of a row take (d + 4) bytes, values 2 d.
  const int64_t rows = (int64_t)n * pool->config.num_kv_heads, codes = rows * pool->config.head_dim;
  const int32_t *slots_dev = nullptr;
  char *kd = nullptr, *vd = nullptr;
  PKV_TRY(stage_tokens(pool, n, slots, &slots_dev, &kd, &vd));
  // The values' room (2 d per row, twice) holds codes, then scales at a 16-byte boundary, of K and of V.
  char *kc = kd, *vc = kd + ((codes + 15) & ~(int64_t)15);
  float *ks = reinterpret_cast<float *>(vc + ((codes + 15) & ~(int64_t)15)), *vs = ks + rows;
  PKV_TRY(pkv::gpu_gather_raw(pool, layer, n, slots_dev, reinterpret_cast<uint8_t *>(kc), reinterpret_cast<uint8_t *>(vc),
                              ks, vs, pool->rt->stream));
  PKV_CUDA_TRY(cudaMemcpyAsync(k_codes, kc, codes, cudaMemcpyDeviceToHost, pool->rt->stream));
  PKV_CUDA_TRY(cudaMemcpyAsync(v_codes, vc, codes, cudaMemcpyDeviceToHost, pool->rt->stream));
  PKV_CUDA_TRY(cudaMemcpyAsync(k_scales, ks, rows * 4, cudaMemcpyDeviceToHost, pool->rt->stream));
  PKV_CUDA_TRY(cudaMemcpyAsync(v_scales, vs, rows * 4, cudaMemcpyDeviceToHost, pool->rt->stream));
  PKV_CUDA_TRY(cudaStreamSynchronize(pool->rt->stream));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_kvpool_copy_pages(pkv_kvpool *pool, int32_t n, const int32_t *src_pages, const int32_t *dst_pages) {
  PKV_API_BEGIN
  PKV_CHECK(pool, KvPool);
  PKV_TRY(pkv::check_not_capturing(pool->rt));
  if (n < 0) return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: n = %d < 0", __func__, n);
  if (pkv::is_wrapped(pool))
    return pkv::fail(PKV_ERR_UNSUPPORTED, "%s: the pool's pages are the caller's (pkv_kvpool_wrap); copy them there", __func__);
  PKV_TRY(check_ids(n, src_pages, pool->config.num_pages, "src_pages", __func__));
  PKV_TRY(check_ids(n, dst_pages, pool->config.num_pages, "dst_pages", __func__));
  // Copies run in parallel: a page may not be both written and read, or written twice, by one call.
  std::unordered_set<int32_t> sources(src_pages, src_pages + n), targets;
  for (int32_t i = 0; i < n; i++)
    if (sources.count(dst_pages[i]) || !targets.insert(dst_pages[i]).second)
      return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: dst_pages[%d] = %d is also a source or repeated", __func__, i,
                       dst_pages[i]);
  return move_pages(pool, pkv::pool_pages(pool), pkv::pool_pages(pool), n, src_pages, dst_pages);
  PKV_API_END
}

pkv_status pkv_kvpool_swap_out(pkv_kvpool *pool, int32_t n, const int32_t *pages, const int32_t *swap_slots) {
  PKV_API_BEGIN
  PKV_CHECK(pool, KvPool);
  PKV_TRY(pkv::check_not_capturing(pool->rt));
  PKV_TRY(check_swap(pool, n, pages, swap_slots, __func__));
  return move_pages(pool, pkv::pool_pages(pool), pkv::swap_pages(pool), n, pages, swap_slots);
  PKV_API_END
}

pkv_status pkv_kvpool_swap_in(pkv_kvpool *pool, int32_t n, const int32_t *swap_slots, const int32_t *pages) {
  PKV_API_BEGIN
  PKV_CHECK(pool, KvPool);
  PKV_TRY(pkv::check_not_capturing(pool->rt));
  PKV_TRY(check_swap(pool, n, pages, swap_slots, __func__));
  return move_pages(pool, pkv::swap_pages(pool), pkv::pool_pages(pool), n, swap_slots, pages);
  PKV_API_END
}

}  // extern "C"
