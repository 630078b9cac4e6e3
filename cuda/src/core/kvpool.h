// The paged KV pool as the decode engine sees it: page memory per layer, and the block table.
//
// Page memory: K and V each one allocation, [layer][page][kv_head][slot][head_dim] (HND), so one
// (page, kv head) slice is page_size * head_dim contiguous elements and a task streams aligned runs.
// FP8 pages end with their scales (kv_format.h); every size below is in bytes of that layout.
//
// Block table: the cache layer (TypeScript) writes page ids into the pinned host table and lowers
// dirty_from[row] to the first column it changed. Only the plan reads dirty entries, checks them and
// moves them to the device table, on both backends (on the CPU backend the "device" table is a second
// host array), so a run reads exactly the entries its plan validated, whatever is written to the
// pinned table afterwards.
#pragma once
#include <climits>
#include <vector>

#include "internal.h"

struct pkv_kvpool {
  pkv_runtime *rt;
  pkv_kv_config config;
  int32_t elem_bytes;      // bytes of one stored element: 2 for f16 and bf16, 1 for FP8 codes
  int64_t page_elems;      // num_kv_heads * page_size * head_dim: one page of one layer, K or V
  int64_t layer_elems;     // num_pages * page_elems
  int64_t code_bytes;      // of one page: its elements (FP8: the codes, before the scales)
  int64_t page_bytes;      // of one page of one layer, K or V (FP8: codes, scales, padding)
  int64_t layer_bytes;     // num_pages * page_bytes
  void *k;                 // [num_layers] x layer_elems (device memory)
  void *v;
  int32_t *table_host;     // pinned [max_sequences][max_pages_per_sequence]
  int32_t *dirty_from;     // pinned [max_sequences], INT32_MAX when clean
  int32_t *table_device;   // the entries plans validated (device memory; host memory on the CPU backend)
  void *swap;              // pinned swap space: swap_pages slots of swap_slot_bytes each
  void *swap_device;       // the same memory as the GPU addresses it (mapped; == swap on the CPU backend)
  int64_t swap_slot_bytes; // num_layers * 2 * page_bytes
  // Staging for slot and page lists of writes, reads and copies (grown on demand).
  int32_t *index_device;
  int64_t index_capacity;
  void *data_device;       // staging for host K/V arrays of writeKV/readKV
  int64_t data_capacity;
  // A pool over the caller's pages (pkv_kvpool_wrap): each layer's K and V, never freed here (k and v
  // stay NULL). Empty for a pool of our own pages.
  std::vector<char *> k_layers, v_layers;
  // The engine whose paged plans (pkv_decode_plan_paged) fill this pool's table rows 0..batch-1: another
  // engine's paged plan would rewrite the rows its plans read, so it is refused while this one lives.
  uint64_t paged_engine;
};

namespace pkv {
inline bool is_wrapped(const pkv_kvpool *pool) { return !pool->k_layers.empty(); }
inline char *layer_k(const pkv_kvpool *pool, int32_t layer) {
  if (is_wrapped(pool)) return pool->k_layers[layer];
  return static_cast<char *>(pool->k) + (int64_t)layer * pool->layer_bytes;
}
inline char *layer_v(const pkv_kvpool *pool, int32_t layer) {
  if (is_wrapped(pool)) return pool->v_layers[layer];
  return static_cast<char *>(pool->v) + (int64_t)layer * pool->layer_bytes;
}
// kvpool.cpp's configuration checks and teardown, shared with pools over caller memory (interop.cpp).
pkv_status check_pool_config(const pkv_kv_config *config);
void free_pool_memory(pkv_kvpool *pool);
}  // namespace pkv
