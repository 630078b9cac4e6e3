// Persistent kernel, few rows, large step: a static first part and a dynamic tail (docs/kernels.md,
// "Dynamic tail"). Each row's first (100 - tail_percent)% is cut into equal "big" tasks of tb pages,
// sized so the big tasks of all rows fill at most one wave; the rest of each row is cut into "small"
// tasks of ts pages (about kPiecesPerBlock per block in all). The queue holds every big task first:
// the blocks whose big task ends early (or that got none) take the small ones, so the finish spread
// is at most one small task.
// With tail_end_tiles > 0 each row's tail ends in shrinking pieces: every piece is a quarter of what
// remains of the row's tail (at most ts, at least tail_end_tiles tiles), and the queue holds the pieces
// longest first, so the last ones handed out are a few tiles each and the finish spread shrinks with
// them (measured 1-1.6% faster on the large few-row steps than even pieces). A plan that would exceed
// max_plan_tasks keeps the even pieces: then the queue holds the full small tasks, then each row's last
// (shorter) small task, longest first. Tasks: big <= wave, small <= kPiecesPerBlock * wave + rows * heads,
// within max_plan_tasks.
#include <utility>
#include <vector>

#include "plan_builder.h"

namespace pkv {
namespace {

// Small tasks per block in the even tail: 10% of the work in 2 pieces per block measured best against
// 20% and 30% in 3 (docs/kernels.md, "Dynamic tail").
constexpr int64_t kPiecesPerBlock = 2;

// The shrinking tail after the big tasks: false (nothing emitted, no row set) if the plan would exceed
// max_plan_tasks.
bool emit_shrinking_tail(PlanBuilder &p, const std::vector<int64_t> &pages, const std::vector<int64_t> &nbig, int64_t tb,
                         int64_t ts, int64_t tile_pages) {
  struct Piece {
    int64_t p0, p1;
    int32_t row, split;
  };
  thread_local std::vector<Piece> pieces;
  thread_local std::vector<int32_t> splits;
  const int32_t batch = p.batch;
  pieces.clear(), splits.resize(batch);
  const int64_t floor_pages = std::min<int64_t>(p.settings.tail_end_tiles * tile_pages, ts), heads = p.shape.num_kv_heads;
  int64_t tasks = 0;
  for (int32_t b = 0; b < batch; b++) {
    int64_t p0 = nbig[b] * tb;
    int32_t split = (int32_t)nbig[b];
    while (p0 < pages[b]) {
      const int64_t rem = pages[b] - p0;
      int64_t len = std::clamp(ceil_div(ceil_div(rem, 4), tile_pages) * tile_pages, floor_pages, ts);
      if (rem - len < floor_pages) len = rem;  // no remnant under the floor
      pieces.push_back({p0, p0 + len, b, split++});
      p0 += len;
    }
    splits[b] = split;
    tasks += (int64_t)split * heads;
  }
  if (tasks > max_plan_tasks(p.shape, batch)) return false;
  for (int32_t b = 0; b < batch; b++) p.set_row(b, splits[b]);
  std::stable_sort(pieces.begin(), pieces.end(), [](const Piece &x, const Piece &y) { return x.p1 - x.p0 > y.p1 - y.p0; });
  for (const Piece &pc : pieces)
    for (int64_t h = 0; h < heads; h++) *p.out++ = p.page_task(pc.row, h, pc.split, pc.p0, pc.p1);
  return true;
}

}  // namespace

void plan_dynamic_tail(PlanBuilder &p, int64_t total_pages) {
  const PlanShape &s = p.shape;
  const int32_t batch = p.batch;
  const int64_t min_pages = std::max<int64_t>(1, ceil_div(s.min_split_tokens, s.page_size));
  const int64_t tile_pages = std::max<int64_t>(1, s.tile_tokens / s.page_size);
  const int64_t heads = s.num_kv_heads, slots = std::max<int64_t>(1, s.wave / heads);
  const int64_t f = std::min<int64_t>(p.settings.tail_percent, 90);
  int64_t tb = std::max(2 * min_pages, ceil_div(total_pages * (100 - f), 100 * slots));
  tb = ceil_div(tb, tile_pages) * tile_pages;
  thread_local std::vector<int64_t> pages, nbig, nsmall;
  thread_local std::vector<std::pair<int64_t, int32_t>> last;
  pages.resize(batch), nbig.resize(batch), nsmall.resize(batch), last.clear();
  int64_t tail_pages = 0;
  for (int32_t b = 0; b < batch; b++) {
    pages[b] = p.pages_of(b);
    nbig[b] = pages[b] * (100 - f) / 100 / tb;  // nbig * tb < pages: every row keeps a tail (f > 0)
    tail_pages += pages[b] - nbig[b] * tb;
  }
  int64_t ts = std::max(2 * min_pages, ceil_div(tail_pages * heads, kPiecesPerBlock * s.wave));
  ts = ceil_div(ts, tile_pages) * tile_pages;
  for (int32_t b = 0; b < batch; b++)
    for (int64_t h = 0; h < heads; h++)
      for (int64_t i = 0; i < nbig[b]; i++) *p.out++ = p.page_task(b, h, i, i * tb, (i + 1) * tb);
  if (p.settings.tail_end_tiles > 0 && emit_shrinking_tail(p, pages, nbig, tb, ts, tile_pages)) return;
  for (int32_t b = 0; b < batch; b++) {
    nsmall[b] = ceil_div(pages[b] - nbig[b] * tb, ts);
    p.set_row(b, (int32_t)(nbig[b] + nsmall[b]));
  }
  for (int32_t b = 0; b < batch; b++) {
    const int64_t base = nbig[b] * tb;
    for (int64_t h = 0; h < heads; h++)
      for (int64_t j = 0; j + 1 < nsmall[b]; j++)
        *p.out++ = p.page_task(b, h, nbig[b] + j, base + j * ts, base + (j + 1) * ts);
    last.push_back({pages[b] - base - (nsmall[b] - 1) * ts, b});
  }
  std::sort(last.begin(), last.end(), [](const auto &x, const auto &y) { return x.first > y.first; });
  for (const auto &[len, b] : last) {
    const int64_t split = nbig[b] + nsmall[b] - 1, p0 = nbig[b] * tb + (nsmall[b] - 1) * ts;
    for (int64_t h = 0; h < heads; h++) *p.out++ = p.page_task(b, h, split, p0, pages[b]);
  }
}

}  // namespace pkv
