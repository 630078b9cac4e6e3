// Workqueue builders for the two kernels. O(batch + tasks) per step, no allocation, no GPU contact:
// the engine calls this into pinned staging memory and copies the image with one async copy.
#include "plan.h"

#include <algorithm>
#include <functional>
#include <vector>

#include "persistentkv.h"

namespace pkv {
namespace {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Emits the tasks of one row: every KV head, `n` splits of nearly equal page counts.
PlanTask *emit_row(PlanTask *t, int32_t row, int32_t heads, int32_t seq_len, int32_t page_size, int64_t pages,
                   int32_t n, int32_t chunk_pages) {
  for (int32_t h = 0; h < heads; h++) {
    for (int32_t s = 0; s < n; s++) {
      // Uniform chunks when chunk_pages > 0 (baseline), otherwise an even division of the row.
      int64_t p0 = chunk_pages > 0 ? (int64_t)s * chunk_pages : s * pages / n;
      int64_t p1 = chunk_pages > 0 ? std::min<int64_t>(pages, (int64_t)(s + 1) * chunk_pages) : (s + 1) * pages / n;
      t->row = row;
      t->head_split = h << 16 | s;
      t->tok_begin = (int32_t)(p0 * page_size);
      t->tok_end = (int32_t)std::min<int64_t>(p1 * page_size, seq_len);
      t++;
    }
  }
  return t;
}

// FlashInfer's rule: split only when (row, head) pairs fill less than one wave, then pick the smallest
// uniform chunk (at least 128 tokens) whose chunks still fit in one wave.
int32_t baseline_chunk_pages(const PlanShape &s, int32_t batch, const int32_t *seq_lens, int64_t max_pages) {
  if ((int64_t)batch * s.num_kv_heads >= s.wave) return 0;
  int64_t lo = std::max<int64_t>(1, 128 / s.page_size), hi = std::max<int64_t>(lo, max_pages);
  while (lo < hi) {
    int64_t mid = (lo + hi) / 2, blocks = 0;
    for (int32_t b = 0; b < batch; b++) blocks += ceil_div(ceil_div(seq_lens[b], s.page_size), mid);
    if (blocks * s.num_kv_heads <= s.wave) hi = mid;
    else lo = mid + 1;
  }
  return (int32_t)lo;
}

}  // namespace

int32_t build_workqueue(const PlanShape &s, int32_t kernel, int32_t batch, const int32_t *table_rows,
                        const int32_t *seq_lens, void *image) {
  auto *header = static_cast<PlanHeader *>(image);
  PlanRow *rows = plan_rows(image);
  header->batch = batch;
  header->tasks_offset = (int32_t)((sizeof(PlanHeader) + 16 * (int64_t)batch) / 16);
  PlanTask *tasks = plan_tasks(image);

  int64_t max_pages = 0, total_pages = 0;
  for (int32_t b = 0; b < batch; b++) {
    int64_t pages = ceil_div(seq_lens[b], s.page_size);
    max_pages = std::max(max_pages, pages);
    total_pages += pages;
  }

  int32_t num_partials = 0, max_splits = 1;
  auto set_row = [&](int32_t b, int32_t n) {
    rows[b] = PlanRow{table_rows[b], seq_lens[b], n, n > 1 ? num_partials : 0};
    if (n > 1) num_partials += n * s.num_kv_heads;
    max_splits = std::max(max_splits, n);
  };

  PlanTask *t = tasks;
  if (kernel == PKV_KERNEL_BASELINE) {
    int32_t chunk = baseline_chunk_pages(s, batch, seq_lens, max_pages);
    for (int32_t b = 0; b < batch; b++) {
      int64_t pages = ceil_div(seq_lens[b], s.page_size);
      int32_t n = chunk > 0 ? (int32_t)ceil_div(pages, chunk) : 1;
      set_row(b, n);
      t = emit_row(t, b, s.num_kv_heads, seq_lens[b], s.page_size, pages, n, chunk);
    }
  } else {
    // Even work per task: the step's page-heads over one wave, never under the minimum split (merge
    // traffic) and rounded to whole pipeline tiles (a partial tile costs a full tile's compute).
    int64_t min_pages = std::max<int64_t>(1, ceil_div(s.min_split_tokens, s.page_size));
    int64_t tile_pages = std::max<int64_t>(1, s.tile_tokens / s.page_size);
    int64_t target = std::max(min_pages, ceil_div(total_pages * s.num_kv_heads, s.wave));
    target = ceil_div(target, tile_pages) * tile_pages;
    // Longest tasks first: the kernel hands tasks out in queue order, so this is list scheduling by LPT.
    // Sorting rows (not tasks) keeps the cost O(batch log batch); all splits of a row are near equal.
    // Key: split length in pages (high bits) and row (low bits), so one integer sort orders them.
    thread_local std::vector<int64_t> keys;
    keys.resize(batch);
    for (int32_t b = 0; b < batch; b++) {
      int64_t pages = ceil_div(seq_lens[b], s.page_size);
      int64_t n = std::min<int64_t>(ceil_div(pages, target), 0xffff);
      keys[b] = ceil_div(pages, n) << 20 | (int64_t)b;
    }
    std::sort(keys.begin(), keys.end(), std::greater<int64_t>());
    for (int32_t i = 0; i < batch; i++) {
      int32_t b = (int32_t)(keys[i] & 0xfffff);
      int64_t pages = ceil_div(seq_lens[b], s.page_size);
      int32_t n = (int32_t)std::min<int64_t>(ceil_div(pages, target), 0xffff);
      set_row(b, n);
      t = emit_row(t, b, s.num_kv_heads, seq_lens[b], s.page_size, pages, n, 0);
    }
  }
  header->num_tasks = (int32_t)(t - tasks);
  header->num_partials = num_partials;
  header->num_deltas = 0;
  header->deltas_offset = header->tasks_offset + header->num_tasks;
  header->reserved[0] = header->reserved[1] = 0;
  return max_splits;
}

}  // namespace pkv
