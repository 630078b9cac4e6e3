// What the planner's strategies share: the image being filled (rows, tasks, partial slots) and the
// helpers that cut a row into tasks. One strategy per file (baseline_chunks, balanced_waves,
// dynamic_tail, claiming); plan.cpp chooses among them. O(batch + tasks) per step, no allocation.
#pragma once
#include <algorithm>
#include <cstdint>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../plan.h"

namespace pkv {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
// 32-bit division is several times cheaper than 64-bit on x86; page and split counts fit easily.
inline uint32_t ceil_div32(uint32_t a, uint32_t b) { return (a + b - 1) / b; }

struct PlanBuilder {
  const PlanShape &shape;
  const PlanSettings &settings;
  int32_t batch;
  const int32_t *table_rows;
  const int32_t *seq_lens;
  const int32_t *first_columns;  // null: every row starts at column 0
  PlanQueries queries;
  PlanRow *rows;
  PlanTask *out;  // the next task to write
  int32_t num_partials = 0, max_splits = 1;
  int32_t claim_tile = 0;  // set by a strategy whose splits claim tiles

  // Row b gets n splits; a split row takes n x q_count partial slots per KV head.
  void set_row(int32_t b, int32_t n) {
    const int32_t q_count = queries.counts ? queries.counts[b] : 1;
    rows[b] = PlanRow{table_rows[b], seq_lens[b], n, n > 1 ? num_partials : 0, first_columns ? first_columns[b] : 0,
                      q_count, queries.firsts ? queries.firsts[b] : b, 0};
    if (n > 1) num_partials += n * shape.num_kv_heads * q_count;
    max_splits = std::max(max_splits, n);
  }
  int64_t pages_of(int32_t b) const { return ceil_div(seq_lens[b], shape.page_size); }
  // A task of row b's KV head h over its pages [p0, p1) (the row's last page may be partial).
  PlanTask page_task(int32_t b, int64_t h, int64_t split, int64_t p0, int64_t p1) const {
    return PlanTask{b, (int32_t)(h << 16 | split), (int32_t)(p0 * shape.page_size),
                    (int32_t)std::min<int64_t>(p1 * shape.page_size, seq_lens[b])};
  }
  // The tasks of a row of one split: one per KV head, the whole row each. Most rows of a large step
  // are such rows, so this store loop is most of such a plan's host time: one 16-byte store per task.
  void emit_whole_row(int32_t row, int32_t seq_len) {
    const int32_t heads = shape.num_kv_heads;
    PlanTask *t = out;
#if defined(__SSE2__)
    // Four heads per iteration (KV heads are mostly a multiple of 4), then the rest.
    __m128i task = _mm_setr_epi32(row, 0, 0, seq_len);
    const __m128i head1 = _mm_setr_epi32(0, 1 << 16, 0, 0), head2 = _mm_add_epi32(head1, head1);
    const __m128i head3 = _mm_add_epi32(head2, head1), head4 = _mm_add_epi32(head2, head2);
    auto store = [&](int32_t h, __m128i v) { _mm_storeu_si128(reinterpret_cast<__m128i *>(t + h), v); };
    int32_t h = 0;
    for (; h + 4 <= heads; h += 4, task = _mm_add_epi32(task, head4)) {
      store(h, task);
      store(h + 1, _mm_add_epi32(task, head1));
      store(h + 2, _mm_add_epi32(task, head2));
      store(h + 3, _mm_add_epi32(task, head3));
    }
    for (; h < heads; h++, task = _mm_add_epi32(task, head1)) store(h, task);
#else
    for (int32_t h = 0; h < heads; h++) t[h] = PlanTask{row, h << 16, 0, seq_len};
#endif
    out = t + heads;
  }
  // The tasks of one row: every KV head, `n` splits (uniform chunks of chunk_pages when that is > 0,
  // as the baseline cuts them; otherwise an even division of the row's `pages`). The first head's
  // splits are computed once and copied for the others: at B256 this loop is most of the plan's host time.
  void emit_row(int32_t row, int64_t pages, int32_t n, int32_t chunk_pages) {
    const int32_t heads = shape.num_kv_heads, seq_len = seq_lens[row], page_size = shape.page_size;
    PlanTask *t = out;
    if (n == 1) {
      emit_whole_row(row, seq_len);
      return;
    }
    PlanTask *first = t;
    auto split = [&](int32_t s, int64_t p0, int64_t p1) {
      first[s] = PlanTask{row, s, (int32_t)(p0 * page_size), (int32_t)std::min<int64_t>(p1 * page_size, seq_len)};
    };
    if (chunk_pages > 0) {
      for (int32_t s = 0; s < n; s++) split(s, (int64_t)s * chunk_pages, std::min<int64_t>(pages, (int64_t)(s + 1) * chunk_pages));
    } else {
      // One division per split: a split ends where the next begins.
      for (int64_t s = 0, p0 = 0; s < n; s++) {
        const int64_t p1 = (s + 1) * pages / n;
        split((int32_t)s, p0, p1);
        p0 = p1;
      }
    }
    t += n;
    // The other heads' tasks are the first head's with the head field added.
#if defined(__SSE2__)
    const __m128i head1 = _mm_setr_epi32(0, 1 << 16, 0, 0);
    __m128i head = head1;
    for (int32_t h = 1; h < heads; h++, head = _mm_add_epi32(head, head1))
      for (int32_t s = 0; s < n; s++, t++)
        _mm_storeu_si128(reinterpret_cast<__m128i *>(t),
                         _mm_add_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(first + s)), head));
#else
    for (int32_t h = 1; h < heads; h++)
      for (int32_t s = 0; s < n; s++, t++) *t = PlanTask{row, h << 16 | s, first[s].tok_begin, first[s].tok_end};
#endif
    out = t;
  }
};

// The strategies. Each sets every row (set_row) and writes its tasks in queue order.
// Baseline kernel: FlashInfer's uniform chunks, split only when (row, head) pairs fill under a wave.
void plan_baseline_chunks(PlanBuilder &b, int64_t max_pages);
// Persistent kernel, the general case: balanced splits, one even wave or several tasks per block, longest first.
void plan_balanced_waves(PlanBuilder &b, int64_t total_pages, int64_t max_pages);
// Persistent kernel, few rows, large step: a static first part and a dynamic tail of small tasks.
void plan_dynamic_tail(PlanBuilder &b, int64_t total_pages);
// Persistent kernel, few rows, medium step: the splits of each (row, head) claim its tiles.
void plan_claiming(PlanBuilder &b);

}  // namespace pkv
