// The reference paged decode attention: plain loops, fp64 products and sums. Every kernel is tested
// against it; clarity over speed. FP8 pages are read as their codes times their rows' scales.
#include <cmath>
#include <vector>

#include "../core/shape.h"
#include "half.h"

extern "C" pkv_status pkv_reference_decode(const pkv_attention_shape *shape, int32_t batch, const int32_t *page_indptr,
                                           const int32_t *page_indices, const int32_t *seq_lens, const void *k_pages,
                                           const void *v_pages, int32_t num_pages, const void *q, void *out,
                                           float *lse) {
  PKV_API_BEGIN
  PKV_NOT_NULL(shape);
  const int32_t hq = shape->num_qo_heads, hkv = shape->num_kv_heads, d = shape->head_dim, ps = shape->page_size;
  const int32_t dtype = shape->dtype;
  PKV_TRY(pkv::check_shape(__func__, hq, hkv, d, ps, dtype));
  if (batch < 0) return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: batch %d < 0", __func__, batch);
  if (num_pages < 0) return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: num_pages %d < 0", __func__, num_pages);
  if (!(shape->sm_scale >= 0.0f) || std::isinf(shape->sm_scale))
    return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: sm_scale %g is not finite and >= 0", __func__, shape->sm_scale);
  if (batch == 0) return PKV_OK;
  // Every pointer is checked before any is read: first the arrays every sequence needs, then the
  // page list's bounds (non-decreasing from 0), and only then its entries.
  PKV_NOT_NULL(page_indptr);
  PKV_NOT_NULL(seq_lens);
  PKV_NOT_NULL(q);
  PKV_NOT_NULL(out);
  if (page_indptr[0] != 0) return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: page_indptr[0] is %d, not 0", __func__, page_indptr[0]);
  for (int32_t b = 0; b < batch; b++) {
    if (page_indptr[b + 1] < page_indptr[b])
      return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: page_indptr[%d] = %d is below page_indptr[%d] = %d", __func__,
                       b + 1, page_indptr[b + 1], b, page_indptr[b]);
    const int64_t pages = (int64_t)page_indptr[b + 1] - page_indptr[b];
    if (seq_lens[b] < 0) return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: seq_lens[%d] = %d < 0", __func__, b, seq_lens[b]);
    if (pages * ps < seq_lens[b])
      return pkv::fail(PKV_ERR_INVALID_ARGUMENT, "%s: sequence %d has %d tokens but %lld pages of %d", __func__, b,
                       seq_lens[b], (long long)pages, ps);
  }
  if (page_indptr[batch] > 0) {
    PKV_NOT_NULL(page_indices);
    PKV_NOT_NULL(k_pages);
    PKV_NOT_NULL(v_pages);
  }
  for (int32_t i = 0; i < page_indptr[batch]; i++)
    if (page_indices[i] < 0 || page_indices[i] >= num_pages)
      return pkv::fail(PKV_ERR_OUT_OF_RANGE, "%s: page_indices[%d] = %d outside 0..%d", __func__, i, page_indices[i],
                       num_pages - 1);

  const float scale = shape->sm_scale > 0 ? shape->sm_scale : 1.0f / std::sqrt((float)d);
  const int32_t group = hq / hkv;
  const auto *q16 = static_cast<const uint16_t *>(q);
  auto *out16 = static_cast<uint16_t *>(out);
  // Token t's head-kv row of K or V as doubles: 16-bit values, or FP8 codes times the row's scale.
  const pkv::PageFormat format = pkv::page_format(dtype, hkv, ps, d);
  auto load_row = [&](const void *pages, int64_t page, int32_t kv, int32_t slot, double *row) {
    const int64_t r = (int64_t)kv * ps + slot;
    const char *base = static_cast<const char *>(pages) + page * format.page_bytes;
    if (pkv::is_fp8(dtype)) {
      const auto *codes = reinterpret_cast<const uint8_t *>(base) + r * d;
      const double s = reinterpret_cast<const float *>(base + format.code_bytes)[r];
      for (int32_t i = 0; i < d; i++) row[i] = pkv::e4m3_to_float(codes[i]) * s;
    } else {
      const auto *values = reinterpret_cast<const uint16_t *>(base) + r * d;
      for (int32_t i = 0; i < d; i++) row[i] = pkv::load_half(dtype, values[i]);
    }
  };
  std::vector<float> qf(d);
  std::vector<double> scores, acc(d), row(d);
  for (int32_t b = 0; b < batch; b++) {
    const int32_t len = seq_lens[b];
    scores.resize(len);
    for (int32_t h = 0; h < hq; h++) {
      const int32_t kv = h / group;
      const int64_t at = ((int64_t)b * hq + h) * d;
      for (int32_t i = 0; i < d; i++) qf[i] = pkv::load_half(dtype, q16[at + i]);
      auto token_page = [&](int32_t t) { return (int64_t)page_indices[page_indptr[b] + t / ps]; };
      double max_score = -INFINITY;
      for (int32_t t = 0; t < len; t++) {
        load_row(k_pages, token_page(t), kv, t % ps, row.data());
        double dot = 0;
        for (int32_t i = 0; i < d; i++) dot += (double)qf[i] * row[i];
        scores[t] = dot * scale;
        max_score = std::max(max_score, scores[t]);
      }
      double denom = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int32_t t = 0; t < len; t++) {
        const double p = std::exp(scores[t] - max_score);
        denom += p;
        load_row(v_pages, token_page(t), kv, t % ps, row.data());
        for (int32_t i = 0; i < d; i++) acc[i] += p * row[i];
      }
      for (int32_t i = 0; i < d; i++) out16[at + i] = pkv::store_half(dtype, len ? (float)(acc[i] / denom) : 0.0f);
      if (lse) lse[(int64_t)b * hq + h] = len ? (float)(max_score + std::log(denom)) : -INFINITY;
    }
  }
  return PKV_OK;
  PKV_API_END
}
