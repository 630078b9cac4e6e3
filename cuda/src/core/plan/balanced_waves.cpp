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
  // Rows (not tasks) are ordered, by their split length, with a three-pass radix sort (split lengths
  // are under 2^24 pages): O(batch), about 1 us at B256 where std::sort took several.
  thread_local std::vector<uint32_t> order, scratch, length, splits;
  order.resize(batch), scratch.resize(batch), length.resize(batch), splits.resize(batch);
  const int shift_ps = __builtin_ctz((unsigned)s.page_size);
  const uint32_t target32 = (uint32_t)std::min<int64_t>(target, 1 << 30);
  for (int32_t b = 0; b < batch; b++) {
    uint32_t pages = ((uint32_t)seq_lens[b] + s.page_size - 1) >> shift_ps;
    uint32_t n = std::min<uint32_t>(ceil_div32(pages, target32), 0xffff);
    splits[b] = n;
    length[b] = std::min<uint32_t>(ceil_div32(pages, n), 0xffffff);
    order[b] = (uint32_t)b;
  }
  uint32_t longest = 0;
  for (int32_t b = 0; b < batch; b++) longest = std::max(longest, length[b]);
  for (int shift = 0; shift < 24 && (longest >> shift) != 0; shift += 8) {  // passes only for used digits
    uint32_t count[257] = {};
    for (int32_t i = 0; i < batch; i++) count[256 - ((length[order[i]] >> shift) & 255)]++;  // descending
    for (int d = 1; d < 257; d++) count[d] += count[d - 1];
    for (int32_t i = 0; i < batch; i++) scratch[count[255 - ((length[order[i]] >> shift) & 255)]++] = order[i];
    order.swap(scratch);
  }
  for (int32_t i = 0; i < batch; i++) {
    const int32_t b = (int32_t)order[i];
    p.set_row(b, (int32_t)splits[b]);
    p.emit_row(b, ((int64_t)seq_lens[b] + s.page_size - 1) >> shift_ps, (int32_t)splits[b], 0);
  }
}

}  // namespace pkv
