// Interop with a caller that owns its memory, streams and page tables (a framework's tensors and cache
// manager): wrapping buffers, streams and K/V pools, the pool layout a model needs to write pages in
// place, device memory figures for sizing a pool, and plans from the caller's page table.
#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include "checked.h"
#include "interop.h"
#include "kv_format.h"
#include "kvpool.h"

namespace {

using pkv::fail;

constexpr uint64_t kWrapAlign = 16;  // every kernel and copy reads and writes 16-byte vectors

// A caller's range: not NULL, aligned, not wrapping the address space; on CUDA, memory of `kind` on the
// runtime's device. `what` names it in the message.
pkv_status check_caller_range(const pkv_runtime *rt, int32_t kind, uint64_t address, uint64_t bytes,
                              const char *what) {
  if (address == 0) return fail(PKV_ERR_NULL_POINTER, "%s: address is 0", what);
  if (address % kWrapAlign != 0)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: address 0x%llx is not %llu-byte aligned", what,
                (unsigned long long)address, (unsigned long long)kWrapAlign);
  uint64_t end = 0;
  // Below 2^63: every x64 and GPU address is, and the layouts carry addresses as int64.
  if (__builtin_add_overflow(address, bytes, &end) || end > pkv::kMaxSize)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: %llu bytes at 0x%llx run past the end of the address space (2^63)", what,
                (unsigned long long)bytes, (unsigned long long)address);
  if (pkv::on_cuda(rt)) return pkv::gpu_check_range(rt->device, kind, address, bytes, what);
  return PKV_OK;
}

void forget_buffer(void *object) {
  auto *buf = static_cast<pkv_buffer *>(object);
  pkv::disown(buf->rt, buf);
  delete buf;
}

void forget_stream(void *object) {
  auto *s = static_cast<pkv_stream *>(object);
  pkv::disown(s->rt, s);
  delete s;
}

void destroy_wrapped_pool(void *object) {
  auto *pool = static_cast<pkv_kvpool *>(object);
  pkv::disown(pool->rt, pool);
  pkv::free_pool_memory(pool);  // the table and staging; k and v are NULL, the layers are the caller's
}

// Available host memory: MemAvailable counts the page cache the kernel gives back on demand, which the
// free page count alone would miss.
uint64_t host_available_bytes() {
  if (FILE *f = fopen("/proc/meminfo", "r")) {
    char line[256];
    unsigned long long kib = 0;
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) found = sscanf(line, "MemAvailable: %llu kB", &kib) == 1;
    fclose(f);
    if (found) return (uint64_t)kib * 1024;
  }
  const long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
}

// Element bytes of a pool dtype this file can describe; others (a newer dtype) are refused, not guessed.
pkv_status elem_bytes_of(int32_t dtype, int32_t *out) {
  if (dtype != PKV_DTYPE_F16 && dtype != PKV_DTYPE_BF16)
    return fail(PKV_ERR_UNSUPPORTED, "dtype %d: interop describes F16 (0) and BF16 (1) pools", dtype);
  *out = 2;
  return PKV_OK;
}

// One layer's page bytes (K or V) of a configuration whose shape is valid.
pkv_status layer_bytes_of(const pkv_kv_config *c, int32_t elem_bytes, uint64_t *out) {
  return pkv::checked_mul("layer bytes (pages x kv heads x page size x head dim x element bytes)", out,
                          {(uint64_t)c->num_pages, (uint64_t)c->num_kv_heads, (uint64_t)c->page_size,
                           (uint64_t)c->head_dim, (uint64_t)elem_bytes});
}

// The caller's K and V ranges must not overlap: a write to one layer's K would change another's pages.
pkv_status check_disjoint(const uint64_t *k, const uint64_t *v, int32_t layers, uint64_t bytes) {
  std::vector<std::pair<uint64_t, int32_t>> starts;  // (address, 2 * layer + (V ? 1 : 0))
  starts.reserve(2 * (size_t)layers);
  for (int32_t l = 0; l < layers; l++) starts.push_back({k[l], 2 * l}), starts.push_back({v[l], 2 * l + 1});
  std::sort(starts.begin(), starts.end());
  for (size_t i = 1; i < starts.size(); i++)
    if (starts[i].first - starts[i - 1].first < bytes) {
      auto name = [](int32_t id, char *text) { snprintf(text, 32, "%s_layers[%d]", id % 2 ? "v" : "k", id / 2); };
      char a[32], b[32];
      name(starts[i - 1].second, a), name(starts[i].second, b);
      return fail(PKV_ERR_INVALID_ARGUMENT, "%s and %s overlap (each layer's pages span %llu bytes)", a, b,
                  (unsigned long long)bytes);
    }
  return PKV_OK;
}

// The block table a wrapped pool's plans read: pinned rows with dirty marks and their device copy.
pkv_status allocate_table(pkv_kvpool *pool) {
  pkv_runtime *rt = pool->rt;
  const pkv_kv_config &c = pool->config;
  const int64_t entries = (int64_t)c.max_sequences * c.max_pages_per_sequence;  // < 2^29 (check_pool_config)
  void *table = nullptr, *dirty = nullptr, *device_table = nullptr;
  pkv_status s = pkv::raw_alloc(rt, PKV_MEM_PINNED, entries * 4, &table);
  pool->table_host = static_cast<int32_t *>(table);
  if (s == PKV_OK) s = pkv::raw_alloc(rt, PKV_MEM_PINNED, (int64_t)c.max_sequences * 4, &dirty);
  pool->dirty_from = static_cast<int32_t *>(dirty);
  if (s == PKV_OK) s = pkv::raw_alloc(rt, PKV_MEM_DEVICE, entries * 4, &device_table);
  pool->table_device = static_cast<int32_t *>(device_table);
  if (s != PKV_OK) return s;
  memset(pool->table_host, 0, entries * 4);
  for (int32_t r = 0; r < c.max_sequences; r++) pool->dirty_from[r] = INT32_MAX;
  // Page 0 everywhere from the start, as in a pool of our own: a run never reads outside the pool.
  if (!pkv::on_cuda(rt)) {
    memset(pool->table_device, 0, entries * 4);
    return PKV_OK;
  }
  PKV_CUDA_TRY(cudaMemsetAsync(pool->table_device, 0, entries * 4, rt->stream));
  return PKV_OK;
}

// ---- plans from the caller's page table --------------------------------------------------------------

// One request of a caller's table: its pages and its context length.
struct CallerRow {
  const int32_t *pages;
  int32_t count;
  int32_t length;
};

// The checked rows of a step, and what staging them into the pool's table replaced (for a failed plan):
// only the entries that changed, so a step whose table is as before saves nothing. One per thread, reused:
// a plan allocates nothing once the largest step has been seen.
struct StagedRows {
  std::vector<CallerRow> rows;
  std::vector<int32_t> row_ids, lengths, old_dirty;
  std::vector<std::pair<int64_t, int32_t>> replaced;  // (table index, old page id)
  void clear() {
    rows.clear(), row_ids.clear(), lengths.clear(), old_dirty.clear(), replaced.clear();
  }
};

StagedRows &staged_rows() {
  thread_local StagedRows st;
  st.clear();
  return st;
}

pkv_status check_pages(const pkv_kvpool *pool, int32_t b, const CallerRow &row, const char *what) {
  const pkv_kv_config &c = pool->config;
  if (row.count > c.max_pages_per_sequence)
    return fail(PKV_ERR_OUT_OF_RANGE, "request %d has %d pages, more than the pool's max_pages_per_sequence %d", b,
                row.count, c.max_pages_per_sequence);
  // A min/max pass vectorises; the slow search for the culprit runs only when there is one.
  int32_t lo = INT32_MAX, hi = INT32_MIN;
  for (int32_t i = 0; i < row.count; i++) lo = std::min(lo, row.pages[i]), hi = std::max(hi, row.pages[i]);
  if (lo >= 0 && hi < c.num_pages) return PKV_OK;
  for (int32_t i = 0; i < row.count; i++)
    if (row.pages[i] < 0 || row.pages[i] >= c.num_pages)
      return fail(PKV_ERR_OUT_OF_RANGE, "request %d: %s holds page %d, outside 0..%d", b, what, row.pages[i],
                  c.num_pages - 1);
  return PKV_OK;
}

// FlashInfer's arrays: indptr [batch + 1], indices [indptr[batch]], last_page_len [batch].
pkv_status rows_from_paged(const pkv_kvpool *pool, int32_t batch, const int32_t *indptr, const int32_t *indices,
                           const int32_t *last_page_len, std::vector<CallerRow> *out) {
  PKV_NOT_NULL(indptr);
  PKV_NOT_NULL(last_page_len);
  const int32_t page_size = pool->config.page_size;
  if (indptr[0] != 0) return fail(PKV_ERR_INVALID_ARGUMENT, "indptr[0] = %d, not 0", indptr[0]);
  for (int32_t b = 0; b < batch; b++) {
    const int64_t count = (int64_t)indptr[b + 1] - indptr[b];
    if (count < 1)
      return fail(PKV_ERR_INVALID_ARGUMENT, "request %d has %lld pages (indptr[%d] = %d, indptr[%d] = %d); every "
                  "request needs at least one", b, (long long)count, b, indptr[b], b + 1, indptr[b + 1]);
    const int32_t last = last_page_len[b];
    if (last < 1 || last > page_size)
      return fail(PKV_ERR_INVALID_ARGUMENT, "last_page_len[%d] = %d is not in 1..%d (the page size)", b, last, page_size);
    const int64_t length = (count - 1) * page_size + last;
    if (length > INT32_MAX)
      return fail(PKV_ERR_INVALID_ARGUMENT, "request %d holds %lld tokens, more than int32", b, (long long)length);
    out->push_back(CallerRow{nullptr, (int32_t)count, (int32_t)length});
  }
  if (indptr[batch] > 0) PKV_NOT_NULL(indices);
  for (int32_t b = 0; b < batch; b++) {
    (*out)[b].pages = indices + indptr[b];
    PKV_TRY(check_pages(pool, b, (*out)[b], "indices"));
  }
  return PKV_OK;
}

// A block table: row b at block_table + b * stride, seq_lens[b] tokens.
pkv_status rows_from_block_table(const pkv_kvpool *pool, int32_t batch, const int32_t *block_table, int32_t stride,
                                 const int32_t *seq_lens, std::vector<CallerRow> *out) {
  PKV_NOT_NULL(block_table);
  PKV_NOT_NULL(seq_lens);
  const int32_t page_size = pool->config.page_size;
  if (stride < 1) return fail(PKV_ERR_INVALID_ARGUMENT, "stride %d < 1", stride);
  for (int32_t b = 0; b < batch; b++) {
    const int32_t length = seq_lens[b];
    if (length < 1 || (int64_t)length > (int64_t)stride * page_size)
      return fail(PKV_ERR_INVALID_ARGUMENT, "seq_lens[%d] = %d is not in 1..%lld (stride %d x page size %d)", b, length,
                  (long long)stride * page_size, stride, page_size);
    const CallerRow row{block_table + (int64_t)b * stride, (int32_t)(((int64_t)length + page_size - 1) / page_size),
                        length};
    PKV_TRY(check_pages(pool, b, row, "block_table"));
    out->push_back(row);
  }
  return PKV_OK;
}

// Writes request b's pages into table row b, marking dirty from the first entry that changed: entries
// before a row's dirty mark are on the device already, so a step uploads only what the caller changed.
void stage_rows(pkv_kvpool *pool, StagedRows *st) {
  const int32_t width = pool->config.max_pages_per_sequence;
  for (size_t b = 0; b < st->rows.size(); b++) {
    const CallerRow &row = st->rows[b];
    int32_t *entries = pool->table_host + (int64_t)b * width;
    st->old_dirty.push_back(pool->dirty_from[b]);
    st->row_ids.push_back((int32_t)b);
    st->lengths.push_back(row.length);
    if (memcmp(entries, row.pages, (size_t)row.count * 4) == 0) continue;  // the usual step: no page changed
    int32_t first_changed = INT32_MAX;
    for (int32_t c = 0; c < row.count; c++)
      if (entries[c] != row.pages[c]) {
        st->replaced.push_back({(int64_t)b * width + c, entries[c]});
        entries[c] = row.pages[c];
        first_changed = std::min(first_changed, c);
      }
    pool->dirty_from[b] = std::min(pool->dirty_from[b], first_changed);
  }
}

void unstage_rows(pkv_kvpool *pool, const StagedRows &st) {
  for (const auto &[index, page] : st.replaced) pool->table_host[index] = page;
  for (size_t b = 0; b < st.old_dirty.size(); b++) pool->dirty_from[b] = st.old_dirty[b];
}

// The checks both plan entries share before reading the caller's arrays. `pool` is resolved in place;
// `engine` stays the handle, which pkv_decode_plan takes.
pkv_status check_plan_handles(pkv_decode_engine *engine, pkv_kvpool *&pool, int32_t batch, const pkv_plan_info *info,
                              const char *func) {
  PKV_TRY(pkv::resolve(engine, pkv::Kind::DecodeEngine, func, "engine"));
  PKV_TRY(pkv::resolve(pool, pkv::Kind::KvPool, func, "pool"));
  if (!info) return fail(PKV_ERR_NULL_POINTER, "%s: info is NULL", func);
  if (!pkv::is_wrapped(pool))
    return fail(PKV_ERR_BAD_STATE, "%s: the pool's block table belongs to its cache; plan it with pkv_decode_plan, or "
                "make the pool with pkv_kvpool_wrap", func);
  if (batch < 1 || batch > pool->config.max_sequences)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: batch %d is not in 1..%d (the pool's max_sequences)", func, batch,
                pool->config.max_sequences);
  return PKV_OK;
}

// Stages the checked rows and plans them with pkv_decode_plan; a failed plan puts the table back and
// its message is renamed for the entry point the caller called.
pkv_status plan_rows(pkv_decode_engine *engine, pkv_kvpool *pool, pkv_kvpool *pool_handle, StagedRows &st,
                     int32_t policy, pkv_plan_info *info, const char *func) {
  const uint64_t engine_token = (uint64_t)(uintptr_t)engine;
  if (pool->paged_engine != 0 && pool->paged_engine != engine_token && pkv::token_is_live(pool->paged_engine))
    return fail(PKV_ERR_BAD_STATE, "%s: another engine plans this pool's table; one engine per wrapped pool (its paged "
                "plans rewrite the table rows the other's plans read)", func);
  stage_rows(pool, &st);
  const pkv_status s = pkv_decode_plan(engine, pool_handle, (int32_t)st.rows.size(), st.row_ids.data(),
                                       st.lengths.data(), policy, info);
  const std::string message = s == PKV_OK ? "" : pkv_last_error();
  pkv::begin_call(func);  // pkv_decode_plan named itself; the rest of this call is func's again
  if (s == PKV_OK) {
    pool->paged_engine = engine_token;
    return PKV_OK;
  }
  unstage_rows(pool, st);
  const std::string inner = "pkv_decode_plan: ";
  return fail(s, "%s", message.compare(0, inner.size(), inner) == 0 ? message.c_str() + inner.size() : message.c_str());
}

}  // namespace

extern "C" {

pkv_status pkv_buffer_wrap(pkv_runtime *rt, int32_t kind, uint64_t address, uint64_t bytes, pkv_buffer **out) {
  PKV_API_BEGIN
  PKV_CHECK(rt, Runtime);
  PKV_NOT_NULL(out);
  *out = nullptr;
  if (kind != PKV_MEM_DEVICE && kind != PKV_MEM_PINNED)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: kind %d is neither DEVICE (0) nor PINNED (1)", __func__, kind);
  if (bytes == 0) return fail(PKV_ERR_INVALID_ARGUMENT, "%s: size is 0 bytes", __func__);
  PKV_TRY(check_caller_range(rt, kind, address, bytes, "the wrapped range"));
  auto *buf = new pkv_buffer{rt, kind, reinterpret_cast<void *>(static_cast<uintptr_t>(address)), bytes, true};
  *out = pkv::handle_of<pkv_buffer>(pkv::adopt(rt, buf, pkv::Kind::Buffer, forget_buffer));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_buffer_is_wrapped(pkv_buffer *buf, int32_t *out) {
  PKV_API_BEGIN
  PKV_CHECK(buf, Buffer);
  PKV_NOT_NULL(out);
  *out = buf->borrowed ? 1 : 0;
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_stream_wrap(pkv_runtime *rt, uint64_t cuda_stream, pkv_stream **out) {
  PKV_API_BEGIN
  PKV_CHECK(rt, Runtime);
  PKV_NOT_NULL(out);
  *out = nullptr;
  auto stream = reinterpret_cast<cudaStream_t>(static_cast<uintptr_t>(cuda_stream));
  if (pkv::on_cuda(rt)) PKV_TRY(pkv::gpu_check_stream(rt->device, stream));
  auto *s = new pkv_stream{rt, stream, true};
  *out = pkv::handle_of<pkv_stream>(pkv::adopt(rt, s, pkv::Kind::Stream, forget_stream));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_stream_native(pkv_stream *stream, uint64_t *out) {
  PKV_API_BEGIN
  PKV_CHECK(stream, Stream);
  PKV_NOT_NULL(out);
  *out = (uint64_t)(uintptr_t)stream->stream;
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_runtime_memory_info(pkv_runtime *rt, uint64_t *free_bytes, uint64_t *total_bytes) {
  PKV_API_BEGIN
  PKV_CHECK(rt, Runtime);
  PKV_NOT_NULL(free_bytes);
  PKV_NOT_NULL(total_bytes);
  uint64_t free_now = 0, total = 0;
  if (pkv::on_cuda(rt)) {
    PKV_TRY(pkv::gpu_memory_info(rt->device, &free_now, &total));
  } else {
    total = pkv::host_memory_bytes();
    free_now = std::min(host_available_bytes(), total);
  }
  *free_bytes = free_now;
  *total_bytes = total;
  return PKV_OK;
  PKV_API_END
}

int32_t pkv_kvpool_layout_size(void) { return (int32_t)sizeof(pkv_kvpool_layout); }

pkv_status pkv_kvpool_layout_get(pkv_kvpool *pool, int32_t layer, pkv_kvpool_layout *out) {
  PKV_API_BEGIN
  PKV_CHECK(pool, KvPool);
  PKV_NOT_NULL(out);
  const pkv_kv_config &c = pool->config;
  if (layer < 0 || layer >= c.num_layers)
    return fail(PKV_ERR_OUT_OF_RANGE, "%s: layer %d outside 0..%d", __func__, layer, c.num_layers - 1);
  pkv_kvpool_layout l{};
  l.k = (int64_t)(uintptr_t)pkv::layer_k(pool, layer);
  l.v = (int64_t)(uintptr_t)pkv::layer_v(pool, layer);
  l.token_bytes = (int64_t)c.head_dim * pool->elem_bytes;
  l.head_bytes = l.token_bytes * c.page_size;
  l.page_bytes = pool->page_bytes;  // FP8: the codes, then the page's scales (kv_format.h)
  l.num_pages = c.num_pages;
  l.page_size = c.page_size;
  l.num_kv_heads = c.num_kv_heads;
  l.head_dim = c.head_dim;
  l.elem_bytes = pool->elem_bytes;
  l.dtype = c.dtype;
  *out = l;
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_kv_page_bytes(const pkv_kv_config *config, uint64_t *out) {
  PKV_API_BEGIN
  PKV_NOT_NULL(config);
  PKV_NOT_NULL(out);
  PKV_TRY(pkv::check_pool_config(config));
  const pkv::PageFormat f = pkv::page_format(config->dtype, config->num_kv_heads, config->page_size, config->head_dim);
  PKV_TRY(pkv::checked_mul("page bytes (layers x K and V x one layer's page)", out,
                           {(uint64_t)config->num_layers, 2, (uint64_t)f.page_bytes}));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_kvpool_wrap(pkv_runtime *rt, const pkv_kv_config *config, const uint64_t *k_layers,
                           const uint64_t *v_layers, pkv_kvpool **out) {
  PKV_API_BEGIN
  PKV_CHECK(rt, Runtime);
  PKV_NOT_NULL(config);
  PKV_NOT_NULL(k_layers);
  PKV_NOT_NULL(v_layers);
  PKV_NOT_NULL(out);
  *out = nullptr;
  PKV_TRY(pkv::check_pool_config(config));
  if (config->swap_pages != 0)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: swap_pages is %d; a pool over caller memory has no swap space (0)",
                __func__, config->swap_pages);
  int32_t elem = 0;
  PKV_TRY(elem_bytes_of(config->dtype, &elem));
  uint64_t layer_bytes = 0;
  PKV_TRY(layer_bytes_of(config, elem, &layer_bytes));
  PKV_TRY(pkv::check_not_capturing(rt));
  for (int32_t l = 0; l < config->num_layers; l++) {
    char what[48];
    snprintf(what, sizeof what, "k_layers[%d]", l);
    PKV_TRY(check_caller_range(rt, PKV_MEM_DEVICE, k_layers[l], layer_bytes, what));
    snprintf(what, sizeof what, "v_layers[%d]", l);
    PKV_TRY(check_caller_range(rt, PKV_MEM_DEVICE, v_layers[l], layer_bytes, what));
  }
  PKV_TRY(check_disjoint(k_layers, v_layers, config->num_layers, layer_bytes));

  auto *pool = new pkv_kvpool();
  pool->rt = rt;
  pool->config = *config;
  pool->elem_bytes = elem;
  pool->page_elems = (int64_t)config->num_kv_heads * config->page_size * config->head_dim;
  pool->layer_elems = (int64_t)config->num_pages * pool->page_elems;
  pool->code_bytes = pool->page_bytes = pool->page_elems * elem;
  pool->layer_bytes = (int64_t)config->num_pages * pool->page_bytes;
  try {
    for (int32_t l = 0; l < config->num_layers; l++) {
      pool->k_layers.push_back(reinterpret_cast<char *>(static_cast<uintptr_t>(k_layers[l])));
      pool->v_layers.push_back(reinterpret_cast<char *>(static_cast<uintptr_t>(v_layers[l])));
    }
  } catch (...) {
    pkv::free_pool_memory(pool);
    throw;
  }
  const pkv_status s = allocate_table(pool);
  if (s != PKV_OK) {
    pkv::free_pool_memory(pool);
    return s;
  }
  *out = pkv::handle_of<pkv_kvpool>(pkv::adopt(rt, pool, pkv::Kind::KvPool, destroy_wrapped_pool));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_decode_plan_paged(pkv_decode_engine *engine, pkv_kvpool *pool, int32_t batch, const int32_t *indptr,
                                 const int32_t *indices, const int32_t *last_page_len, int32_t policy,
                                 pkv_plan_info *info) {
  PKV_API_BEGIN
  pkv_kvpool *const pool_handle = pool;
  PKV_TRY(check_plan_handles(engine, pool, batch, info, __func__));
  StagedRows &st = staged_rows();
  PKV_TRY(rows_from_paged(pool, batch, indptr, indices, last_page_len, &st.rows));
  return plan_rows(engine, pool, pool_handle, st, policy, info, __func__);
  PKV_API_END
}

pkv_status pkv_decode_plan_block_table(pkv_decode_engine *engine, pkv_kvpool *pool, int32_t batch,
                                       const int32_t *block_table, int32_t stride, const int32_t *seq_lens,
                                       int32_t policy, pkv_plan_info *info) {
  PKV_API_BEGIN
  pkv_kvpool *const pool_handle = pool;
  PKV_TRY(check_plan_handles(engine, pool, batch, info, __func__));
  StagedRows &st = staged_rows();
  PKV_TRY(rows_from_block_table(pool, batch, block_table, stride, seq_lens, &st.rows));
  return plan_rows(engine, pool, pool_handle, st, policy, info, __func__);
  PKV_API_END
}

}  // extern "C"
