// Persistent kernel, few rows, medium step: claiming (docs/kernels.md, "Claiming"). A row's fair
// share is its tiles over a block's (the step's tiles over the wave). Every row starts at once: a row
// under one share gets one static worker per (row, head), the others split the remaining blocks by
// largest remainder. A row of several splits shares its tiles (PlanTask in plan_image.h): each worker
// starts on kClaimFirstTiles tiles of its own, then claims the row's remaining tiles one at a time, so
// its splits finish within about a pipeline's depth of each other whatever share of memory each gets.
// Helpers follow in the queue, for the shares a row's workers fall short of plus a quarter: blocks
// freed by rows that end early join the rows still running. A helper that comes too late finds no tile
// and ends at once, at no cost to its row (the kernels' write_task_output), so rows get them freely.
// First workers go longest row first. Measured 1-6% faster than the single even wave on such steps;
// on the dynamic tail's steps 1-2.5% slower than the tail.
#include <vector>

#include "plan_builder.h"

namespace pkv {

void plan_claiming(PlanBuilder &p) {
  const PlanShape &s = p.shape;
  const int32_t batch = p.batch;
  const int32_t *seq_lens = p.seq_lens;
  const int64_t tile = s.tile_tokens, heads = s.num_kv_heads, slots = std::max<int64_t>(1, s.wave / heads);
  p.claim_tile = s.tile_tokens;
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
    *p.out++ = PlanTask{b, (int32_t)(h << 16 | split), (int32_t)(first_tile * tile), (int32_t)(shared_tile * tile)};
  };
  // The first tile past the workers' own ones.
  auto shared_of = [&](int32_t b) { return std::min<int64_t>(workers[b] * kClaimFirstTiles, tiles[b]); };
  for (int32_t b : order) {
    const int64_t n = workers[b] + helpers[b];
    p.set_row(b, (int32_t)n);
    if (n == 1) {
      p.emit_row(b, 0, 1, 0);
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
}

}  // namespace pkv
