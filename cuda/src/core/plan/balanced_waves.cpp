// Persistent kernel, the general case: balanced splits. A single wave of near-equal tasks is best when
// the rows allow one (long, even rows: no tail, fewest merges); it is taken when its longest task is
// within 5% (large steps) or 25% (small steps) of the mean share. Otherwise (skewed rows: a short row's
// task would leave its block idle) several tasks per block, handed out longest first, so the idle tail
// is at most one short task: 4 per block when few rows, 2 when many rows already give fine grain.
// Never under the minimum split (merge traffic and per-task latency), rounded up to whole pipeline
// tiles (a partial tile costs a full one).
#include <vector>

#include "plan_builder.h"

namespace pkv {

void plan_balanced_waves(PlanBuilder &p, int64_t total_pages, int64_t max_pages) {
  const PlanShape &s = p.shape;
  const int32_t batch = p.batch;
  const int32_t *seq_lens = p.seq_lens;
  const int64_t min_pages = std::max<int64_t>(1, ceil_div(s.min_split_tokens, s.page_size));
  const int64_t tile_pages = std::max<int64_t>(1, s.tile_tokens / s.page_size);
  const int64_t work = total_pages * s.num_kv_heads;
  const bool few_rows = (int64_t)batch * s.num_kv_heads <= s.wave;
  auto tasks_for = [&](int64_t w, int64_t *longest) {
    int64_t tasks = 0, worst = 0;
    for (int32_t b = 0; b < batch; b++) {
      int64_t pages = ceil_div(seq_lens[b], s.page_size), n = ceil_div(pages, w);
      tasks += n;
      worst = std::max(worst, ceil_div(pages, n));
    }
    if (longest) *longest = worst;
    return tasks * s.num_kv_heads;
  };
  int64_t target = 0;
  if (few_rows) {
    int64_t lo = min_pages, hi = std::max(min_pages, max_pages), longest = 0;
    while (lo < hi) {
      int64_t mid = (lo + hi) / 2;
      if (tasks_for(mid, nullptr) <= s.wave) hi = mid;
      else lo = mid + 1;
    }
    tasks_for(lo, &longest);
    // Large steps (over 32 minimum splits per block) pay little per task, so 5% idle already favours
    // several tasks per block; small steps are dominated by per-task latency, so accept up to 25%.
    const int64_t slack = work >= 32 * min_pages * s.wave ? 105 : 125;
    if (lo == min_pages || longest * s.wave * 100 <= work * slack) target = lo;
  }
  if (target == 0) {
    // Each task costs about a pipeline fill (~2 us) beyond its bytes: no task under 2x the minimum.
    const int64_t per_block = few_rows ? 4 : 2;
    target = std::max(2 * min_pages, ceil_div(work, per_block * s.wave));
  }
  target = ceil_div(target, tile_pages) * tile_pages;
  // Longest tasks first: the kernel hands tasks out in queue order, so this is list scheduling by LPT.
  // Rows (not tasks) are ordered, by their split length, with a stable radix sort (split lengths are
  // under 2^24 pages), one pass per used byte: O(batch), where std::sort took several us at B256.
  // The first pass's histogram is counted while the lengths are made, and reads the rows in order.
  thread_local std::vector<uint32_t> order_buf, scratch_buf, length_buf, splits_buf;
  order_buf.resize(batch), scratch_buf.resize(batch), length_buf.resize(batch), splits_buf.resize(batch);
  // Plain pointers: a thread_local vector read inside these loops costs a TLS lookup per access (the
  // task stores could alias its fields), a third of the loops' instructions at B256.
  uint32_t *order = order_buf.data(), *scratch = scratch_buf.data(), *length = length_buf.data(), *splits = splits_buf.data();
  const int shift_ps = __builtin_ctz((unsigned)s.page_size);
  const uint32_t target32 = (uint32_t)std::min<int64_t>(target, 1 << 30);
  uint32_t count[257] = {}, longest = 0;
  for (int32_t b = 0; b < batch; b++) {
    const uint32_t pages = ((uint32_t)seq_lens[b] + s.page_size - 1) >> shift_ps;
    uint32_t n = 1, len = pages;  // most rows of a large step fit one task: no division
    if (pages > target32) {
      n = std::min<uint32_t>(ceil_div32(pages, target32), 0xffff);
      len = ceil_div32(pages, n);
    }
    len = std::min<uint32_t>(len, 0xffffff);
    splits[b] = n;
    length[b] = len;
    longest = std::max(longest, len);
    count[256 - (len & 255)]++;  // descending
  }
  for (int shift = 0; shift < 24 && (longest >> shift) != 0; shift += 8) {  // passes only for used digits
    if (shift > 0) {
      std::fill(count, count + 257, 0u);
      for (int32_t i = 0; i < batch; i++) count[256 - ((length[order[i]] >> shift) & 255)]++;
    }
    // Digits above the longest's are empty: start the prefix sum at the longest's bucket.
    const int first = (longest >> shift) < 256 ? 255 - (int)(longest >> shift) : 0;
    for (int d = first + 1; d < 257; d++) count[d] += count[d - 1];
    if (shift == 0) {
      for (int32_t b = 0; b < batch; b++) scratch[count[255 - (length[b] & 255)]++] = (uint32_t)b;
    } else {
      for (int32_t i = 0; i < batch; i++) scratch[count[255 - ((length[order[i]] >> shift) & 255)]++] = order[i];
    }
    std::swap(order, scratch);
  }
  if (longest == 0)  // unreachable (every row has a page), but then the identity order
    for (int32_t b = 0; b < batch; b++) order[b] = (uint32_t)b;
  for (int32_t i = 0; i < batch; i++) {
    const int32_t b = (int32_t)order[i], n = (int32_t)splits[b];
    p.set_row(b, n);
    if (n == 1) p.emit_whole_row(b, seq_lens[b]);
    else p.emit_row(b, ((int64_t)seq_lens[b] + s.page_size - 1) >> shift_ps, n, 0);
  }
}

}  // namespace pkv
