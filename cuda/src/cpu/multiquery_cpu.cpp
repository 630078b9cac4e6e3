// Host execution of a plan's multi-query section (fp32, natural-log domain; a slot's lse is natural
// here, where the kernels keep log2: each executor merges its own partials).
#include "multiquery_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../core/multiquery_image.h"
#include "half.h"

namespace pkv {

void cpu_multiquery_run(const MqParams &p, int32_t d, int32_t dtype, float sm_scale) {
  const MqHeader &header = mq_header(p.image);
  const MqRow *rows = mq_rows(p.image);
  const MqTask *tasks = mq_tasks(p.image);
  const MqMerge *merges = mq_merges(p.image);
  const int32_t g = p.group, hq = p.num_kv_heads * g, page_size = 1 << p.page_shift;
  const auto *kp = static_cast<const uint16_t *>(p.k), *vp = static_cast<const uint16_t *>(p.v);
  const auto *qp = static_cast<const uint16_t *>(p.q);
  auto *op = static_cast<uint16_t *>(p.out);
  const int64_t slot_floats = mq_slot_floats(d);
  std::vector<float> q(d), o(d), scores;
  // Element offset of context token `tok` of a row, KV head `head`.
  auto token_at = [&](const MqRow &row, int32_t head, int32_t tok) {
    const int64_t page = p.table[row.table_row * p.table_stride + (tok >> p.page_shift)];
    return ((page * p.num_kv_heads + head) * page_size + (tok & (page_size - 1))) * d;
  };
  auto write_out = [&](int64_t qo_row, const float *val, float lse) {
    for (int32_t e = 0; e < d; e++) op[qo_row * d + e] = store_half(dtype, val[e]);
    if (p.lse) p.lse[qo_row] = lse;
  };
  // The output row of a tile's local row r (token r / g of the tile, query head y = r % g).
  auto qo_row_of = [&](const MqTask &t, int32_t r) {
    const MqRow &row = rows[t.row];
    return ((int64_t)row.q_offset + t.q_begin + r / g) * hq + (int64_t)t.head * g + r % g;
  };

  for (int32_t ti = 0; ti < header.num_tasks; ti++) {
    const MqTask &t = tasks[ti];
    const MqRow &row = rows[t.row];
    for (int32_t r = 0; r < t.q_count * g; r++) {
      const int64_t qo_row = qo_row_of(t, r);
      // Causal: the range's tokens up to this query's own position.
      const int32_t end = std::min(t.kv_end, mq_position(row, t.q_begin + r / g) + 1);
      for (int32_t e = 0; e < d; e++) q[e] = load_half(dtype, qp[qo_row * d + e]) * sm_scale;
      scores.assign(std::max(0, end - t.kv_begin), 0.f);
      float mx = -INFINITY;
      for (int32_t tok = t.kv_begin; tok < end; tok++) {
        const int64_t base = token_at(row, t.head, tok);
        float s = 0.f;
        for (int32_t e = 0; e < d; e++) s += q[e] * load_half(dtype, kp[base + e]);
        scores[tok - t.kv_begin] = s;
        mx = std::fmax(mx, s);
      }
      float l = 0.f;
      std::fill(o.begin(), o.end(), 0.f);
      for (int32_t tok = t.kv_begin; tok < end; tok++) {
        const int64_t base = token_at(row, t.head, tok);
        const float w = std::exp(scores[tok - t.kv_begin] - mx);
        l += w;
        for (int32_t e = 0; e < d; e++) o[e] += w * load_half(dtype, vp[base + e]);
      }
      // A split past this query's position saw nothing: it weighs nothing in the merge.
      for (int32_t e = 0; e < d; e++) o[e] = l > 0.f ? o[e] / l : 0.f;
      const float lse = l > 0.f ? mx + std::log(l) : -INFINITY;
      if (t.slot < 0) {
        write_out(qo_row, o.data(), lse);
      } else {
        float *slot = p.partial + t.slot * slot_floats;
        std::memcpy(slot + (int64_t)r * d, o.data(), sizeof(float) * d);
        slot[mq_slot_lse(d) + r] = lse;
      }
    }
  }
  for (int32_t mi = 0; mi < header.num_merges; mi++) {
    const MqMerge &m = merges[mi];
    const MqTask &t = tasks[m.task];
    for (int32_t r = 0; r < t.q_count * g; r++) {
      float mx = -INFINITY, sum = 0.f;
      for (int32_t s = 0; s < m.num_splits; s++)
        mx = std::fmax(mx, p.partial[(m.slot + s) * slot_floats + mq_slot_lse(d) + r]);
      std::fill(o.begin(), o.end(), 0.f);
      for (int32_t s = 0; s < m.num_splits; s++) {
        const float *slot = p.partial + (m.slot + s) * slot_floats;
        const float lse = slot[mq_slot_lse(d) + r];
        if (lse == -INFINITY) continue;
        const float w = std::exp(lse - mx);
        sum += w;
        for (int32_t e = 0; e < d; e++) o[e] += w * slot[(int64_t)r * d + e];
      }
      for (int32_t e = 0; e < d; e++) o[e] /= sum;
      write_out(qo_row_of(t, r), o.data(), mx + std::log(sum));
    }
  }
}

}  // namespace pkv
