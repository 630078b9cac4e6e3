// Host execution of a decode plan (fp32). Each task computes its tokens' (lse, output) with a
// two-pass softmax, then writes the output or a partial; the task that completes a (row, head)'s count
// merges the partials by LSE, in the order the kernels would. Natural-log domain throughout.
#include "decode_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../core/plan_image.h"
#include "half.h"

namespace pkv {

void cpu_apply_deltas(const PlanDelta *deltas, int32_t n, int32_t *table, int64_t table_stride) {
  for (int32_t i = 0; i < n; i++) table[deltas[i].table_row * table_stride + deltas[i].column] = deltas[i].page;
}

void cpu_decode_run(const DecodeParams &a, int32_t head_dim, int32_t dtype, float sm_scale) {
  const int32_t page_size = 1 << a.page_shift;
  const PlanHeader &header = plan_header(a.plan);
  const PlanRow *rows = plan_rows(a.plan);
  const PlanTask *tasks = plan_tasks(a.plan);
  const int32_t d = head_dim, g = a.group, shift = a.page_shift;
  // A token's row of K or V: its elements as floats and the factor they carry (an FP8 row's scale, else 1),
  // applied once per token as the kernels do: to the score (K) and to the probability (V).
  const PageFormat format = page_format(dtype, a.num_kv_heads, page_size, d);
  auto load_row = [&](const void *pages, int32_t page, int32_t head, int32_t tok, float *row) -> float {
    const int64_t r = (int64_t)head * page_size + (tok & (page_size - 1));
    const char *base = static_cast<const char *>(pages) + page * format.page_bytes;
    if (is_fp8(dtype)) {
      const auto *codes = reinterpret_cast<const uint8_t *>(base) + r * d;
      for (int32_t e = 0; e < d; e++) row[e] = e4m3_to_float(codes[e]);
      return reinterpret_cast<const float *>(base + format.code_bytes)[r];
    }
    const auto *values = reinterpret_cast<const uint16_t *>(base) + r * d;
    for (int32_t e = 0; e < d; e++) row[e] = load_half(dtype, values[e]);
    return 1.f;
  };
  std::vector<float> elems(d);
  const auto *qp = static_cast<const uint16_t *>(a.q);
  auto *op = static_cast<uint16_t *>(a.out);
  std::vector<float> q(d), scores, o(d);
  std::vector<int32_t> toks;
  // A task's tokens: its range, or for a claiming split (PlanTask) its own first tiles and, standing in
  // for the kernels' claims, every n-th tile of the shared part (each tile to exactly one split).
  // Returns the tiles (claiming splits) or -1.
  auto task_tokens = [&](const PlanTask &t, const PlanRow &row) -> int32_t {
    toks.clear();
    const int32_t ct = header.claim_tile;
    if (!task_claims(ct, row)) {
      for (int32_t tok = t.tok_begin; tok < t.tok_end; tok++) toks.push_back(tok);
      return -1;
    }
    const ClaimTiles c = claim_tiles(t, row, ct);
    int32_t tiles = 0;
    auto add = [&](int64_t tile) {
      for (int64_t tok = tile * ct; tok < std::min<int64_t>((tile + 1) * ct, row.seq_len); tok++) toks.push_back((int32_t)tok);
      tiles++;
    };
    for (int32_t i = 0; i < c.own_count; i++) add(c.own_first + i);
    for (int64_t i = c.shared_first + task_split(t); i < c.ntiles; i += row.num_splits) add(i);
    return tiles;
  };

  auto write_out = [&](int64_t qo_row, const float *val, float lse) {
    for (int32_t e = 0; e < d; e++) op[qo_row * d + e] = store_half(dtype, val[e]);
    if (a.lse) a.lse[qo_row] = lse;
  };

  for (int32_t ti = 0; ti < header.num_tasks; ti++) {
    const PlanTask &t = tasks[ti];
    const PlanRow &row = rows[t.row];
    const int32_t head = task_head(t), n = row.num_splits;
    int32_t split = task_split(t);
    const int32_t *table_row = row_table(a.table, a.table_stride, row);
    const int32_t rows_q = row_query_rows(row, g);
    const int64_t row_base = partial_slot(row, head) * g;  // the (row, head)'s first partial row
    // A claiming row counts tiles: a split that saw none takes no slot; the others take slots in turn
    // and the one that completes the row's tiles merges the slots taken (plan_image.h, as the kernels do).
    const int32_t claimed = task_tokens(t, row);
    const int64_t pair = (int64_t)t.row * a.num_kv_heads + head;
    if (claimed == 0) continue;
    if (claimed > 0) split = a.slot_counters[pair]++;
    scores.resize(toks.size());
    for (int32_t y = 0; y < rows_q; y++) {
      const int64_t qo_row = row_qo(row, a.num_kv_heads, g, head, y);
      const int32_t visible = row_visible(row, g, y);  // causal: none of the queries after its own
      for (int32_t e = 0; e < d; e++) q[e] = load_half(dtype, qp[qo_row * d + e]) * sm_scale;
      float mx = -INFINITY;
      for (size_t i = 0; i < toks.size(); i++) {
        const int32_t tok = toks[i];
        if (tok >= visible) {
          scores[i] = -INFINITY;
          continue;
        }
        const float factor = load_row(a.k, table_row[tok >> shift], head, tok, elems.data());
        float s = 0.f;
        for (int32_t e = 0; e < d; e++) s += q[e] * elems[e];
        scores[i] = s * factor;
        mx = std::fmax(mx, scores[i]);
      }
      float l = 0.f;
      std::fill(o.begin(), o.end(), 0.f);
      for (size_t i = 0; i < toks.size(); i++) {
        const int32_t tok = toks[i];
        if (tok >= visible) continue;
        const float factor = load_row(a.v, table_row[tok >> shift], head, tok, elems.data());
        float p = std::exp(scores[i] - mx);
        l += p;
        const float w = p * factor;
        for (int32_t e = 0; e < d; e++) o[e] += w * elems[e];
      }
      // A claiming split may get no tile: its partial weighs nothing in the merge (lse -inf, o 0).
      for (int32_t e = 0; e < d; e++) o[e] = l > 0.f ? o[e] / l : 0.f;
      const float lse = l > 0.f ? mx + std::log(l) : -INFINITY;
      if (n == 1) {
        write_out(qo_row, o.data(), lse);
      } else {
        std::memcpy(a.partial_o + (row_base + (int64_t)split * rows_q + y) * d, o.data(), sizeof(float) * d);
        a.partial_lse[row_base + (int64_t)split * rows_q + y] = lse;
      }
    }
    if (n == 1) continue;
    // Splits counted and tiles (or splits) done in one word, as the kernels count them: every split that
    // took a slot counts before the row's tiles are complete, so the completing one knows the slots.
    unsigned long long &counter = a.merge_counters[pair];
    counter += merge_count_add(claimed);
    if (merge_work_done(counter) != (claimed > 0 ? claim_tiles(t, row, header.claim_tile).ntiles : n)) continue;
    const int32_t merged = merge_splits_counted(counter);
    counter = 0;  // the last split merges and leaves the counters clean for the next layer
    a.slot_counters[pair] = 0;
    for (int32_t y = 0; y < rows_q; y++) {
      float mx = -INFINITY, sum = 0.f;
      for (int32_t s = 0; s < merged; s++) mx = std::fmax(mx, a.partial_lse[row_base + (int64_t)s * rows_q + y]);
      std::fill(o.begin(), o.end(), 0.f);
      for (int32_t s = 0; s < merged; s++) {
        const float ls = a.partial_lse[row_base + (int64_t)s * rows_q + y];
        if (ls == -INFINITY) continue;  // a split that saw none of this query's tokens
        float w = std::exp(ls - mx);
        sum += w;
        const float *src = a.partial_o + (row_base + (int64_t)s * rows_q + y) * d;
        for (int32_t e = 0; e < d; e++) o[e] += w * src[e];
      }
      for (int32_t e = 0; e < d; e++) o[e] /= sum;
      write_out(row_qo(row, a.num_kv_heads, g, head, y), o.data(), mx + std::log(sum));
    }
  }
}

}  // namespace pkv
