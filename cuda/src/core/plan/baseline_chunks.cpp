// Baseline kernel (one block per task): FlashInfer's rule. Split only when (row, head) pairs fill less
// than one wave, then cut every row into the smallest uniform chunk (at least 128 tokens) whose chunks
// still fit in one wave.
#include "plan_builder.h"

namespace pkv {
namespace {

int32_t chunk_pages(const PlanShape &s, int32_t batch, const int32_t *seq_lens, int64_t max_pages) {
  if ((int64_t)batch * s.num_kv_heads >= s.wave) return 0;
  int64_t lo = std::max<int64_t>(1, 128 / s.page_size), hi = std::max<int64_t>(lo, max_pages);
  const int shift_ps = __builtin_ctz((unsigned)s.page_size);
  while (lo < hi) {
    int64_t mid = (lo + hi) / 2, blocks = 0;
    // 32-bit divisions (pages and chunks fit) and a shift for the pages: this search is most of a small
    // step's planning.
    for (int32_t b = 0; b < batch; b++)
      blocks += ceil_div32(((uint32_t)seq_lens[b] + s.page_size - 1) >> shift_ps, (uint32_t)mid);
    if (blocks * s.num_kv_heads <= s.wave) hi = mid;
    else lo = mid + 1;
  }
  return (int32_t)lo;
}

}  // namespace

void plan_baseline_chunks(PlanBuilder &p, int64_t max_pages) {
  const int32_t chunk = chunk_pages(p.shape, p.batch, p.seq_lens, max_pages);
  for (int32_t b = 0; b < p.batch; b++) {
    const int64_t pages = p.pages_of(b);
    const int32_t n = chunk > 0 ? (int32_t)ceil_div(pages, chunk) : 1;
    p.set_row(b, n);
    if (n == 1) p.emit_whole_row(b, p.seq_lens[b]);
    else p.emit_row(b, pages, n, chunk);
  }
}

}  // namespace pkv
