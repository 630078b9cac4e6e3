// The reference paged decode attention: plain loops, fp32 products, fp64 sums. Every kernel is
// tested against it; clarity over speed.
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
  const auto *k16 = static_cast<const uint16_t *>(k_pages), *v16 = static_cast<const uint16_t *>(v_pages);
  const auto *q16 = static_cast<const uint16_t *>(q);
  auto *out16 = static_cast<uint16_t *>(out);
  std::vector<float> qf(d);
  std::vector<double> scores, acc(d);
  for (int32_t b = 0; b < batch; b++) {
    const int32_t len = seq_lens[b];
    scores.resize(len);
    for (int32_t h = 0; h < hq; h++) {
      const int32_t kv = h / group;
      const int64_t row = ((int64_t)b * hq + h) * d;
      for (int32_t i = 0; i < d; i++) qf[i] = pkv::load_half(dtype, q16[row + i]);
      // Offset of token t's head-`kv` vector: page slice, then slot.
      auto token = [&](int32_t t) {
        int64_t page = page_indices[page_indptr[b] + t / ps];
        return ((page * hkv + kv) * ps + t % ps) * d;
      };
      double max_score = -INFINITY;
      for (int32_t t = 0; t < len; t++) {
        const int64_t at = token(t);
        double dot = 0;
        for (int32_t i = 0; i < d; i++) dot += (double)(qf[i] * pkv::load_half(dtype, k16[at + i]));
        scores[t] = dot * scale;
        max_score = std::max(max_score, scores[t]);
      }
      double denom = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int32_t t = 0; t < len; t++) {
        const double p = std::exp(scores[t] - max_score);
        denom += p;
        const int64_t at = token(t);
        for (int32_t i = 0; i < d; i++) acc[i] += p * pkv::load_half(dtype, v16[at + i]);
      }
      for (int32_t i = 0; i < d; i++) out16[row + i] = pkv::store_half(dtype, len ? (float)(acc[i] / denom) : 0.0f);
      if (lse) lse[(int64_t)b * hq + h] = len ? (float)(max_score + std::log(denom)) : -INFINITY;
    }
  }
  return PKV_OK;
  PKV_API_END
}
