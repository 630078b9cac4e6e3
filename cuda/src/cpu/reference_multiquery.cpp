// The reference causal attention of several query tokens per row over a paged context: row b's query
// token j sits at position seq_len - q_len + j and sees positions 0 .. that position, so it is exactly
// pkv_reference_decode's query over that prefix (and equals it bit for bit where every q_len is 1).
#include <cmath>

#include "../core/shape.h"

namespace {

using pkv::fail;

// Checks the page list (as pkv_reference_decode does) and the query list: every count in 0..seq_len.
pkv_status check_rows(const char *func, int32_t batch, int32_t page_size, int32_t num_pages, const int32_t *q_indptr,
                      const int32_t *page_indptr, const int32_t *page_indices, const int32_t *seq_lens) {
  if (q_indptr[0] != 0) return fail(PKV_ERR_INVALID_ARGUMENT, "%s: q_indptr[0] is %d, not 0", func, q_indptr[0]);
  if (page_indptr[0] != 0) return fail(PKV_ERR_INVALID_ARGUMENT, "%s: page_indptr[0] is %d, not 0", func, page_indptr[0]);
  for (int32_t b = 0; b < batch; b++) {
    const int64_t queries = (int64_t)q_indptr[b + 1] - q_indptr[b], pages = (int64_t)page_indptr[b + 1] - page_indptr[b];
    if (seq_lens[b] < 0) return fail(PKV_ERR_INVALID_ARGUMENT, "%s: seq_lens[%d] = %d < 0", func, b, seq_lens[b]);
    if (queries < 0 || queries > seq_lens[b])
      return fail(PKV_ERR_INVALID_ARGUMENT, "%s: row %d has %lld query tokens, not 0..seq_lens[%d] = %d", func, b,
                  (long long)queries, b, seq_lens[b]);
    if (pages < 0 || pages * page_size < seq_lens[b])
      return fail(PKV_ERR_INVALID_ARGUMENT, "%s: row %d has %d tokens but %lld pages of %d", func, b, seq_lens[b],
                  (long long)pages, page_size);
  }
  if (page_indptr[batch] > 0 && !page_indices) return fail(PKV_ERR_NULL_POINTER, "%s: page_indices is NULL", func);
  for (int32_t i = 0; i < page_indptr[batch]; i++)
    if (page_indices[i] < 0 || page_indices[i] >= num_pages)
      return fail(PKV_ERR_OUT_OF_RANGE, "%s: page_indices[%d] = %d outside 0..%d", func, i, page_indices[i], num_pages - 1);
  return PKV_OK;
}

}  // namespace

extern "C" pkv_status pkv_reference_multiquery(const pkv_attention_shape *shape, int32_t batch, const int32_t *q_indptr,
                                               const int32_t *page_indptr, const int32_t *page_indices,
                                               const int32_t *seq_lens, const void *k_pages, const void *v_pages,
                                               int32_t num_pages, const void *q, void *out, float *lse) {
  PKV_API_BEGIN
  PKV_NOT_NULL(shape);
  const int32_t hq = shape->num_qo_heads, hkv = shape->num_kv_heads, d = shape->head_dim, ps = shape->page_size;
  const int32_t dtype = shape->dtype;
  PKV_TRY(pkv::check_shape(__func__, hq, hkv, d, ps, dtype));
  if (batch < 0) return fail(PKV_ERR_INVALID_ARGUMENT, "%s: batch %d < 0", __func__, batch);
  if (num_pages < 0) return fail(PKV_ERR_INVALID_ARGUMENT, "%s: num_pages %d < 0", __func__, num_pages);
  if (!(shape->sm_scale >= 0.0f) || std::isinf(shape->sm_scale))
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: sm_scale %g is not finite and >= 0", __func__, shape->sm_scale);
  if (batch == 0) return PKV_OK;
  PKV_NOT_NULL(q_indptr);
  PKV_NOT_NULL(page_indptr);
  PKV_NOT_NULL(seq_lens);
  PKV_TRY(check_rows(__func__, batch, ps, num_pages, q_indptr, page_indptr, page_indices, seq_lens));
  if (q_indptr[batch] == 0) return PKV_OK;
  PKV_NOT_NULL(q);
  PKV_NOT_NULL(out);
  PKV_NOT_NULL(k_pages);
  PKV_NOT_NULL(v_pages);

  // Query token j of row b is a decode query over the row's first seq_len - q_len + j + 1 tokens.
  const int64_t row_elems = (int64_t)hq * d;
  const auto *q16 = static_cast<const uint16_t *>(q);
  auto *out16 = static_cast<uint16_t *>(out);
  for (int32_t b = 0; b < batch; b++) {
    const int32_t q_len = q_indptr[b + 1] - q_indptr[b];
    const int32_t pages[2] = {0, page_indptr[b + 1] - page_indptr[b]};
    const int32_t *indices = page_indices ? page_indices + page_indptr[b] : nullptr;
    for (int32_t j = 0; j < q_len; j++) {
      const int32_t visible = seq_lens[b] - q_len + j + 1;
      const int64_t token = (int64_t)q_indptr[b] + j;
      PKV_TRY(pkv_reference_decode(shape, 1, pages, indices, &visible, k_pages, v_pages, num_pages, q16 + token * row_elems,
                                   out16 + token * row_elems, lse ? lse + token * hq : nullptr));
    }
  }
  return PKV_OK;
  PKV_API_END
}
