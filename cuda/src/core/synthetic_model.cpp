// The synthetic model's C entry points (header section "synthetic model"): argument checks, then the
// kernels (gpu/synthetic_model.cu) on the stream or the host loops (cpu/synthetic_model.cpp). Nothing here
// waits for the GPU, allocates or frees, so every call can be captured into a graph.
#include <climits>

#include "checked.h"
#include "kvpool.h"
#include "shape.h"
#include "synthetic_model.h"

namespace {

using pkv::fail;

constexpr uint64_t kRowBytes = sizeof(pkv_synthetic_row);
static_assert(sizeof(pkv_synthetic_row) == 16, "rows are four int32, as the bindings write them");

// A resolved buffer of runtime `rt` holds `bytes` at `offset`, and offset is a multiple of `align`.
pkv_status check_placement(pkv_runtime *rt, const pkv_buffer *buf, uint64_t offset, uint64_t bytes, uint64_t align,
                           const char *func, const char *what) {
  if (buf->rt != rt) return fail(PKV_ERR_INVALID_ARGUMENT, "%s: %s belongs to another runtime", func, what);
  if (offset % align != 0)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: %s offset %llu is not a multiple of %llu bytes", func, what,
                (unsigned long long)offset, (unsigned long long)align);
  return pkv::check_range(what, offset, bytes, buf->bytes);
}

// A buffer argument: resolves `buf` in place (PKV_CHECK), then checks its placement.
pkv_status check_buffer(pkv_runtime *rt, pkv_buffer *&buf, uint64_t offset, uint64_t bytes, uint64_t align,
                        const char *func, const char *what) {
  PKV_TRY(pkv::resolve(buf, pkv::Kind::Buffer, func, what));
  return check_placement(rt, buf, offset, bytes, align, func, what);
}

// The kernels read one range while they write the other: overlapping ranges would corrupt the result.
pkv_status check_disjoint(const pkv_buffer *a, uint64_t at, uint64_t an, const pkv_buffer *b, uint64_t bt, uint64_t bn,
                          const char *func, const char *what) {
  if (a == b && an > 0 && bn > 0 && at < bt + bn && bt < at + an)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: the %s ranges overlap", func, what);
  return PKV_OK;
}

// The pool (resolved in place) and the table: what every K/V write needs.
pkv_status check_pool_and_table(pkv_kvpool *&pool, pkv_buffer *&table, const char *func) {
  PKV_TRY(pkv::resolve(pool, pkv::Kind::KvPool, func, "pool"));
  if (pool->elem_bytes != 2)
    return fail(PKV_ERR_UNSUPPORTED, "%s: the pool's dtype %d is not 16-bit (f16 or bf16)", func, pool->config.dtype);
  return check_buffer(pool->rt, table, 0, PKV_SYNTHETIC_TABLE_BYTES, 2, func, "table");
}

pkv::SyntheticKV kv_target(const pkv_kvpool *pool) {
  const pkv_kv_config &c = pool->config;
  return pkv::SyntheticKV{static_cast<uint16_t *>(pool->k),
                          static_cast<uint16_t *>(pool->v),
                          pool->layer_elems,
                          (int64_t)c.num_pages * c.page_size,
                          c.num_kv_heads,
                          c.head_dim,
                          __builtin_ctz((unsigned)c.page_size)};
}

template <class T>
T *at(pkv_buffer *buf, uint64_t offset) {
  return reinterpret_cast<T *>(static_cast<char *>(buf->ptr) + offset);
}

void note_uses(pkv_runtime *rt, pkv_stream *stream, std::initializer_list<const void *> objects) {
  for (const void *object : objects) pkv::note_capture_use(rt, pkv::stream_of(rt, stream), object);
}

}  // namespace

extern "C" {

pkv_status pkv_synthetic_forward(pkv_kvpool *pool, pkv_buffer *table, int32_t layer, int32_t num_qo_heads, int32_t batch,
                                 pkv_buffer *rows, uint64_t rows_offset, pkv_buffer *q, uint64_t q_offset,
                                 pkv_stream *stream) {
  PKV_API_BEGIN
  const char *func = __func__;
  PKV_TRY(check_pool_and_table(pool, table, func));
  const pkv_kv_config &c = pool->config;
  if (layer < 0 || layer >= c.num_layers)
    return fail(PKV_ERR_OUT_OF_RANGE, "%s: layer %d is outside 0..%d", func, layer, c.num_layers - 1);
  PKV_TRY(pkv::check_shape(func, num_qo_heads, c.num_kv_heads, c.head_dim, c.page_size, c.dtype));
  if (batch < 0) return fail(PKV_ERR_INVALID_ARGUMENT, "%s: batch %d < 0", func, batch);
  uint64_t row_bytes = 0, q_bytes = 0;
  PKV_TRY(pkv::checked_mul("rows bytes (batch x 16)", &row_bytes, {(uint64_t)batch, kRowBytes}));
  PKV_TRY(pkv::checked_mul("q bytes (batch x qo heads x head dim x 2)", &q_bytes,
                           {(uint64_t)batch, (uint64_t)num_qo_heads, (uint64_t)c.head_dim, 2}));
  PKV_TRY(check_buffer(pool->rt, rows, rows_offset, row_bytes, 16, func, "rows"));
  PKV_TRY(check_buffer(pool->rt, q, q_offset, q_bytes, 16, func, "q"));
  PKV_TRY(check_disjoint(q, q_offset, q_bytes, rows, rows_offset, row_bytes, func, "q and rows"));
  PKV_TRY(check_disjoint(q, q_offset, q_bytes, table, 0, PKV_SYNTHETIC_TABLE_BYTES, func, "q and table"));
  PKV_TRY(pkv::check_stream(pool->rt, stream, func));
  if (batch == 0) return PKV_OK;
  const pkv::SyntheticForward p{at<const uint16_t>(table, 0), at<const pkv_synthetic_row>(rows, rows_offset),
                                at<uint16_t>(q, q_offset),    kv_target(pool),
                                batch,                         layer,
                                num_qo_heads * c.head_dim};
  if (!pkv::on_cuda(pool->rt)) {
    pkv::cpu_synthetic_forward(p);
    return PKV_OK;
  }
  note_uses(pool->rt, stream, {pool, table, rows, q});
  return pkv::gpu_synthetic_forward(p, pkv::stream_of(pool->rt, stream));
  PKV_API_END
}

pkv_status pkv_synthetic_prefill(pkv_kvpool *pool, pkv_buffer *table, int32_t n, pkv_buffer *rows,
                                 uint64_t rows_offset, pkv_stream *stream) {
  PKV_API_BEGIN
  const char *func = __func__;
  PKV_TRY(check_pool_and_table(pool, table, func));
  if (n < 0) return fail(PKV_ERR_INVALID_ARGUMENT, "%s: n = %d < 0", func, n);
  uint64_t row_bytes = 0;
  PKV_TRY(pkv::checked_mul("rows bytes (n x 16)", &row_bytes, {(uint64_t)n, kRowBytes}));
  PKV_TRY(check_buffer(pool->rt, rows, rows_offset, row_bytes, 16, func, "rows"));
  PKV_TRY(pkv::check_stream(pool->rt, stream, func));
  if (n == 0) return PKV_OK;
  const pkv::SyntheticPrefill p{at<const uint16_t>(table, 0), at<const pkv_synthetic_row>(rows, rows_offset),
                                kv_target(pool), n, pool->config.num_layers};
  if (!pkv::on_cuda(pool->rt)) {
    pkv::cpu_synthetic_prefill(p);
    return PKV_OK;
  }
  note_uses(pool->rt, stream, {pool, table, rows});
  return pkv::gpu_synthetic_prefill(p, pkv::stream_of(pool->rt, stream));
  PKV_API_END
}

pkv_status pkv_synthetic_sample(int32_t vocab, int32_t batch, pkv_buffer *rows, uint64_t rows_offset,
                                pkv_buffer *tokens, uint64_t tokens_offset, pkv_stream *stream) {
  PKV_API_BEGIN
  const char *func = __func__;
  PKV_CHECK(rows, Buffer);
  if (vocab < 1) return fail(PKV_ERR_INVALID_ARGUMENT, "%s: vocab %d is not in 1..%d", func, vocab, INT32_MAX);
  if (batch < 0) return fail(PKV_ERR_INVALID_ARGUMENT, "%s: batch %d < 0", func, batch);
  pkv_runtime *rt = rows->rt;
  uint64_t row_bytes = 0, token_bytes = 0;
  PKV_TRY(pkv::checked_mul("rows bytes (batch x 16)", &row_bytes, {(uint64_t)batch, kRowBytes}));
  PKV_TRY(pkv::checked_mul("tokens bytes (batch x 4)", &token_bytes, {(uint64_t)batch, 4}));
  PKV_TRY(check_placement(rt, rows, rows_offset, row_bytes, 16, func, "rows"));
  PKV_TRY(check_buffer(rt, tokens, tokens_offset, token_bytes, 4, func, "tokens"));
  PKV_TRY(check_disjoint(tokens, tokens_offset, token_bytes, rows, rows_offset, row_bytes, func, "tokens and rows"));
  PKV_TRY(pkv::check_stream(rt, stream, func));
  if (batch == 0) return PKV_OK;
  const pkv::SyntheticSample p{at<const pkv_synthetic_row>(rows, rows_offset), at<int32_t>(tokens, tokens_offset), batch,
                               (uint32_t)vocab};
  if (!pkv::on_cuda(rt)) {
    pkv::cpu_synthetic_sample(p);
    return PKV_OK;
  }
  note_uses(rt, stream, {rows, tokens});
  return pkv::gpu_synthetic_sample(p, pkv::stream_of(rt, stream));
  PKV_API_END
}

}  // extern "C"
