// Workqueue builders for the two kernels. O(batch + tasks) per step, no allocation, no GPU contact:
// the engine calls this into pinned staging memory and copies the image with one async copy.
#include "plan.h"

#include <algorithm>
#include <vector>

#include "persistentkv.h"

namespace pkv {
namespace {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
// 32-bit division is several times cheaper than 64-bit on x86; page and split counts fit easily.
inline uint32_t ceil_div32(uint32_t a, uint32_t b) { return (a + b - 1) / b; }

// Emits the tasks of one row: every KV head, `n` splits (uniform chunks of chunk_pages when that is
// > 0, as the baseline cuts them; otherwise an even division of the row). The first head's splits are
// computed once and copied for the others: at B256 this loop is most of the plan's host time.
PlanTask *emit_row(PlanTask *t, int32_t row, int32_t heads, int32_t seq_len, int32_t page_size, int64_t pages,
                   int32_t n, int32_t chunk_pages) {
  if (n == 1) {
    for (int32_t h = 0; h < heads; h++) *t++ = PlanTask{row, h << 16, 0, seq_len};
    return t;
  }
  PlanTask *first = t;
  for (int32_t s = 0; s < n; s++) {
    int64_t p0 = chunk_pages > 0 ? (int64_t)s * chunk_pages : s * pages / n;
    int64_t p1 = chunk_pages > 0 ? std::min<int64_t>(pages, (int64_t)(s + 1) * chunk_pages) : (s + 1) * pages / n;
    first[s] = PlanTask{row, s, (int32_t)(p0 * page_size), (int32_t)std::min<int64_t>(p1 * page_size, seq_len)};
  }
  t += n;
  for (int32_t h = 1; h < heads; h++)
    for (int32_t s = 0; s < n; s++, t++) *t = PlanTask{row, h << 16 | s, first[s].tok_begin, first[s].tok_end};
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

// A task of row b's KV head h over its pages [p0, p1) (the row's last page may be partial).
inline PlanTask page_task(const PlanShape &s, const int32_t *seq_lens, int32_t b, int64_t h, int64_t split, int64_t p0,
                          int64_t p1) {
  return PlanTask{b, (int32_t)(h << 16 | split), (int32_t)(p0 * s.page_size),
                  (int32_t)std::min<int64_t>(p1 * s.page_size, seq_lens[b])};
}

// The tail of emit_tail with tail_end > 0, after the big tasks: null (nothing emitted, no row set) if
// the plan would exceed max_plan_tasks.
template <class SetRow>
PlanTask *emit_shrinking_tail(const PlanShape &s, int32_t batch, const int32_t *seq_lens, const std::vector<int64_t> &pages,
                              const std::vector<int64_t> &nbig, int64_t tb, int64_t ts, int64_t tile_pages, SetRow &set_row,
                              PlanTask *t) {
  struct Piece {
    int64_t p0, p1;
    int32_t row, split;
  };
  thread_local std::vector<Piece> pieces;
  thread_local std::vector<int32_t> splits;
  pieces.clear(), splits.resize(batch);
  const int64_t floor_pages = std::min<int64_t>(s.tail_end * tile_pages, ts), heads = s.num_kv_heads;
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
  if (tasks > max_plan_tasks(s, batch)) return nullptr;
  for (int32_t b = 0; b < batch; b++) set_row(b, splits[b]);
  std::stable_sort(pieces.begin(), pieces.end(), [](const Piece &x, const Piece &y) { return x.p1 - x.p0 > y.p1 - y.p0; });
  for (const Piece &pc : pieces)
    for (int64_t h = 0; h < heads; h++) *t++ = page_task(s, seq_lens, pc.row, h, pc.split, pc.p0, pc.p1);
  return t;
}

// v7 (bench/NOTES-kernels.md), used when PlanShape::tail_pct > 0 (the engine's default 10): a static first part and a
// dynamic tail. Each row's first (100 - tail_pct)% is cut into equal "big" tasks of tb pages, sized so the
// big tasks of all rows fill at most one wave; the rest of each row is cut into "small" tasks of ts pages
// (about tail_pieces per block in all). The queue holds every big task first, then the full small tasks,
// then each row's last (shorter) small task, longest first: the blocks whose big task ends early (or that
// got none) take the small ones, so the finish spread is at most one small task. Tasks: big <= wave,
// small <= tail_pieces * wave + rows * heads, so within max_plan_tasks for tail_pieces <= 3.
// With tail_end > 0 (v9) each row's tail ends in shrinking pieces instead: every piece is a quarter of
// what remains of the row's tail (at most ts, at least tail_end tiles), and the queue holds the pieces
// longest first, so the last ones handed out are a few tiles each and the finish spread shrinks with
// them. A plan that would exceed max_plan_tasks keeps the even pieces.
template <class SetRow>
PlanTask *emit_tail(const PlanShape &s, int32_t batch, const int32_t *seq_lens, int64_t total_pages, int64_t min_pages,
                    int64_t tile_pages, SetRow &set_row, PlanTask *t) {
  const int64_t heads = s.num_kv_heads, slots = std::max<int64_t>(1, s.wave / heads);
  const int64_t f = std::min<int64_t>(s.tail_pct, 90), k = s.tail_pieces > 0 ? std::min(s.tail_pieces, 3) : 3;
  int64_t tb = std::max(2 * min_pages, ceil_div(total_pages * (100 - f), 100 * slots));
  tb = ceil_div(tb, tile_pages) * tile_pages;
  thread_local std::vector<int64_t> pages, nbig, nsmall;
  thread_local std::vector<std::pair<int64_t, int32_t>> last;
  pages.resize(batch), nbig.resize(batch), nsmall.resize(batch), last.clear();
  int64_t tail_pages = 0;
  for (int32_t b = 0; b < batch; b++) {
    pages[b] = ceil_div(seq_lens[b], s.page_size);
    nbig[b] = pages[b] * (100 - f) / 100 / tb;  // nbig * tb < pages: every row keeps a tail (f > 0)
    tail_pages += pages[b] - nbig[b] * tb;
  }
  int64_t ts = std::max(2 * min_pages, ceil_div(tail_pages * heads, k * s.wave));
  ts = ceil_div(ts, tile_pages) * tile_pages;
  for (int32_t b = 0; b < batch; b++)
    for (int64_t h = 0; h < heads; h++)
      for (int64_t i = 0; i < nbig[b]; i++) *t++ = page_task(s, seq_lens, b, h, i, i * tb, (i + 1) * tb);
  if (s.tail_end > 0) {
    PlanTask *end = emit_shrinking_tail(s, batch, seq_lens, pages, nbig, tb, ts, tile_pages, set_row, t);
    if (end) return end;
  }
  for (int32_t b = 0; b < batch; b++) {
    nsmall[b] = ceil_div(pages[b] - nbig[b] * tb, ts);
    set_row(b, (int32_t)(nbig[b] + nsmall[b]));
  }
  for (int32_t b = 0; b < batch; b++) {
    const int64_t base = nbig[b] * tb;
    for (int64_t h = 0; h < heads; h++)
      for (int64_t j = 0; j + 1 < nsmall[b]; j++)
        *t++ = page_task(s, seq_lens, b, h, nbig[b] + j, base + j * ts, base + (j + 1) * ts);
    last.push_back({pages[b] - base - (nsmall[b] - 1) * ts, b});
  }
  std::sort(last.begin(), last.end(), [](const auto &x, const auto &y) { return x.first > y.first; });
  for (const auto &[len, b] : last) {
    const int64_t split = nbig[b] + nsmall[b] - 1, p0 = nbig[b] * tb + (nsmall[b] - 1) * ts;
    for (int64_t h = 0; h < heads; h++) *t++ = page_task(s, seq_lens, b, h, split, p0, pages[b]);
  }
  return t;
}

// v8 (bench/NOTES-kernels.md): claiming, for few rows. A row's fair share is its tiles over a block's
// (the step's tiles over the wave). Every row starts at once: a row under one share gets one static
// worker per (row, head), the others split the remaining blocks by largest remainder. A row of several
// splits shares its tiles (PlanTask): each worker starts on kClaimFirstTiles tiles of its own, then
// claims the row's remaining tiles one at a time, so its splits finish within about a pipeline's depth
// of each other whatever share of memory each gets. Helpers follow in the queue, for the shares a row's
// workers fall short of plus a quarter: blocks freed by rows that end early join the rows still
// running. A helper that comes too late finds no tile and ends at once, at no cost to its row
// (write_task_output), so rows get them freely. First workers go longest row first.
template <class SetRow>
PlanTask *emit_claim(const PlanShape &s, int32_t batch, const int32_t *seq_lens, SetRow &set_row, PlanTask *t) {
  const int64_t tile = s.tile_tokens, heads = s.num_kv_heads, slots = std::max<int64_t>(1, s.wave / heads);
  thread_local std::vector<int64_t> tiles, workers, helpers, rest;
  thread_local std::vector<int32_t> order;
  tiles.resize(batch), workers.resize(batch), helpers.resize(batch), rest.resize(batch), order.resize(batch);
  int64_t total = 0, shared_total = 0, free_slots = slots, handed = 0;
  for (int32_t b = 0; b < batch; b++) total += tiles[b] = ceil_div(seq_lens[b], tile);
  auto small = [&](int32_t b) { return tiles[b] * slots < total; };
  for (int32_t b = 0; b < batch; b++) {
    order[b] = b;
    if (small(b)) free_slots--;
    else shared_total += tiles[b];
  }
  free_slots = std::max<int64_t>(free_slots, 1);
  for (int32_t b = 0; b < batch; b++) {
    workers[b] = small(b) ? 1 : tiles[b] * free_slots / shared_total;
    rest[b] = small(b) ? -1 : tiles[b] * free_slots % shared_total;
    if (!small(b)) handed += workers[b];
  }
  std::sort(order.begin(), order.end(), [&](int32_t x, int32_t y) { return rest[x] > rest[y]; });
  for (int32_t i = 0; i < batch && handed < free_slots && rest[order[i]] >= 0; i++, handed++) workers[order[i]]++;
  for (int32_t b = 0; b < batch; b++) {
    const int64_t most = std::max<int64_t>(1, ceil_div(seq_lens[b], s.min_split_tokens));
    workers[b] = std::clamp<int64_t>(workers[b], 1, most);
    const int64_t short_of = std::max<int64_t>(0, ceil_div(tiles[b] * slots - workers[b] * total, total));
    helpers[b] = small(b) ? 0 : std::min(short_of + ceil_div(workers[b], 4), most - workers[b]);
  }
  std::sort(order.begin(), order.end(), [&](int32_t x, int32_t y) { return tiles[x] > tiles[y]; });
  auto task = [&](int32_t b, int64_t h, int64_t split, int64_t first_tile, int64_t shared_tile) {
    *t++ = PlanTask{b, (int32_t)(h << 16 | split), (int32_t)(first_tile * tile), (int32_t)(shared_tile * tile)};
  };
  // The first tile past the workers' own ones.
  auto shared_of = [&](int32_t b) { return std::min<int64_t>(workers[b] * kClaimFirstTiles, tiles[b]); };
  for (int32_t b : order) {
    const int64_t n = workers[b] + helpers[b];
    set_row(b, (int32_t)n);
    if (n == 1) {
      t = emit_row(t, b, (int32_t)heads, seq_lens[b], s.page_size, 0, 1, 0);
      continue;
    }
    for (int64_t h = 0; h < heads; h++)
      for (int64_t k = 0; k < workers[b]; k++) task(b, h, k, std::min(k * kClaimFirstTiles, shared_of(b)), shared_of(b));
  }
  // Helpers in rounds, the rows with the most tiles per worker first in each, so early help is spread.
  std::sort(order.begin(), order.end(), [&](int32_t x, int32_t y) { return tiles[x] * workers[y] > tiles[y] * workers[x]; });
  int64_t rounds = 0;
  for (int32_t b = 0; b < batch; b++) rounds = std::max(rounds, helpers[b]);
  for (int64_t k = 0; k < rounds; k++)
    for (int32_t b : order) {
      if (k >= helpers[b]) continue;
      for (int64_t h = 0; h < heads; h++) task(b, h, workers[b] + k, shared_of(b), shared_of(b));
    }
  return t;
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
    int64_t pages = ((int64_t)seq_lens[b] + s.page_size - 1) >> __builtin_ctz((unsigned)s.page_size);
    max_pages = std::max(max_pages, pages);
    total_pages += pages;
  }

  int32_t num_partials = 0, max_splits = 1;
  header->claim_tile = 0;
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
    // Balanced splits. A single wave of near-equal tasks is best when the rows allow one (long, even
    // rows: no tail, fewest merges); it is taken when its longest task is within 5% (large steps) or 25% (small
    // steps) of the mean share.
    // Otherwise (skewed rows: a short row's task would leave its block idle) several tasks per block,
    // handed out longest first, so the idle tail is at most one short task: 4 per block when few rows,
    // 2 when many rows already give fine grain. Never under the minimum split (merge traffic and
    // per-task latency), rounded up to whole pipeline tiles (a partial tile costs a full one).
    int64_t min_pages = std::max<int64_t>(1, ceil_div(s.min_split_tokens, s.page_size));
    int64_t tile_pages = std::max<int64_t>(1, s.tile_tokens / s.page_size);
    const int64_t work = total_pages * s.num_kv_heads;
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
    const bool few_rows = (int64_t)batch * s.num_kv_heads <= s.wave;
    if (few_rows && s.tail_pct > 0 && !s.claim_large && (s.tail_all || work >= 32 * min_pages * s.wave)) {
      t = emit_tail(s, batch, seq_lens, total_pages, min_pages, tile_pages, set_row, t);
      goto done;
    }
    // Medium steps (under the tail's size, at least claim_min_tiles per block): claiming. Measured (v8):
    // 1-6% faster than the single even wave there; on the tail's steps 1-2.5% slower than the tail.
    if (few_rows && s.claim_min_tiles > 0 &&
        (total_pages * s.page_size / s.tile_tokens) * s.num_kv_heads >= (int64_t)s.claim_min_tiles * s.wave) {
      header->claim_tile = s.tile_tokens;
      t = emit_claim(s, batch, seq_lens, set_row, t);
      goto done;
    }
    int64_t target = 0;
    if (few_rows && s.per_block == 0) {
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
      int64_t per_block = few_rows ? (s.per_block > 0 ? std::min(s.per_block, 4) : 4) : 2;
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
      int32_t b = (int32_t)order[i];
      set_row(b, (int32_t)splits[b]);
      t = emit_row(t, b, s.num_kv_heads, seq_lens[b], s.page_size, ((int64_t)seq_lens[b] + s.page_size - 1) >> shift_ps,
                   (int32_t)splits[b], 0);
    }
  }
done:
  header->num_tasks = (int32_t)(t - tasks);
  header->num_partials = num_partials;
  header->num_deltas = 0;
  header->deltas_offset = header->tasks_offset + header->num_tasks;
  header->reserved = 0;
  return max_splits;
}

}  // namespace pkv
