// Native test of the multi-query planner (cuda/src/core/plan/multiquery_tiles.cpp) on random steps of
// rows with query lengths, with and without wide tiles. Each section must satisfy:
//   - per (row, KV head) the tiles cover the query tokens 0 .. q_len - 1 once each, wide tiles (rows of
//     more than wide_above query rows, where the shape has them) of kMqWideRows / group tokens and
//     narrow ones of kMqTileRows / group;
//   - each tile's tasks tile its context [0, last query position + 1) with kMqKvTile-aligned begins;
//   - wide tasks come first (num_wide of them), wide_grid = min(num_wide, wide_wave), and the blocks of
//     that grid (block b: tasks b, b + grid, ...) take context sums within twice the longest task;
//   - a tile of one task writes the output (slot -1); a split tile has exactly one merge, naming one of
//     its tasks, whose slots are the tile's, disjoint from every other and within num_slots;
//   - pairs counts every (query token, visible context token) once.
// Called from plan_test.cpp's main (zig-out/bin/plan-test).
#include <algorithm>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "../../cuda/src/core/multiquery_plan.h"

namespace {

using namespace pkv;

int failures = 0;
std::string where;

void fail(const char *what) {
  if (failures++ < 20) fprintf(stderr, "FAIL multiquery plan %s: %s\n", where.c_str(), what);
}
void check(bool ok, const char *what) {
  if (!ok) fail(what);
}

void check_section(const MqPlanShape &s, const MqPlan &plan) {
  const int32_t g = s.group;
  // Tiles by (row, head, q_begin): their tasks' indices.
  std::map<std::tuple<int32_t, int32_t, int32_t>, std::vector<int32_t>> tiles;
  for (int32_t i = 0; i < (int32_t)plan.tasks.size(); i++) {
    const MqTask &t = plan.tasks[i];
    if (t.row < 0 || t.row >= (int32_t)plan.rows.size() || t.head < 0 || t.head >= s.num_kv_heads) {
      fail("a task's row or head out of range");
      return;
    }
    const MqRow &row = plan.rows[t.row];
    const bool wide = s.wide_wave > 0 && (int64_t)row.q_len * g > s.wide_above;
    check((i < plan.num_wide) == wide, "wide tasks first, and only the rows of more than wide_above query rows");
    check(t.q_begin % mq_tile_tokens(g, wide) == 0 && t.q_count >= 1 &&
              t.q_count == std::min(mq_tile_tokens(g, wide), row.q_len - t.q_begin),
          "a tile of the class's tokens (the row's last one shorter)");
    check(t.q_count * g <= (wide ? kMqWideRows : kMqTileRows), "a tile within its kernel's rows");
    check(t.kv_begin % kMqKvTile == 0 && t.kv_begin < t.kv_end, "ranges non-empty, begins on K/V tiles");
    tiles[{t.row, t.head, t.q_begin}].push_back(i);
  }
  check(plan.wide_grid == std::min(plan.num_wide, s.wide_wave), "the wide grid is the wave or the wide task count");
  // Coverage of query tokens per (row, head), and of each tile's context.
  int64_t pairs = 0;
  for (int32_t r = 0; r < (int32_t)plan.rows.size(); r++) {
    const MqRow &row = plan.rows[r];
    for (int32_t t = 0; t < row.q_len; t++) pairs += mq_position(row, t) + 1;
    for (int32_t h = 0; h < s.num_kv_heads; h++) {
      int32_t covered = 0;
      for (auto it = tiles.lower_bound({r, h, 0}); it != tiles.end() && std::get<0>(it->first) == r &&
                                                    std::get<1>(it->first) == h;
           ++it)
        covered += plan.tasks[it->second[0]].q_count;
      check(covered == row.q_len, "a (row, head)'s tiles cover its query tokens once");
    }
  }
  check(pairs == plan.pairs, "pairs counts each visible (query, context) pair once");
  std::vector<int32_t> slot_owner(std::max(0, plan.num_slots), -1);
  std::map<std::tuple<int32_t, int32_t, int32_t>, int32_t> merges_of;
  for (const MqMerge &m : plan.merges) {
    if (m.task < 0 || m.task >= (int32_t)plan.tasks.size()) {
      fail("a merge's task out of range");
      return;
    }
    const MqTask &t = plan.tasks[m.task];
    merges_of[{t.row, t.head, t.q_begin}]++;
    const auto &mine = tiles[{t.row, t.head, t.q_begin}];
    check(m.num_splits == (int32_t)mine.size(), "a merge counts its tile's tasks");
    std::vector<int32_t> slots;
    for (int32_t i : mine) slots.push_back(plan.tasks[i].slot);
    std::sort(slots.begin(), slots.end());
    for (int32_t k = 0; k < (int32_t)slots.size(); k++) check(slots[k] == m.slot + k, "a merge's slots are its tile's");
  }
  for (const auto &[key, ids] : tiles) {
    const MqRow &row = plan.rows[std::get<0>(key)];
    const MqTask &first = plan.tasks[ids[0]];
    const int32_t kv_len = mq_position(row, first.q_begin + first.q_count - 1) + 1;
    std::vector<std::pair<int32_t, int32_t>> ranges;
    for (int32_t i : ids) ranges.push_back({plan.tasks[i].kv_begin, plan.tasks[i].kv_end});
    std::sort(ranges.begin(), ranges.end());
    int32_t at = 0;
    for (const auto &[b, e] : ranges) {
      check(b == at, "a tile's splits tile its context without gaps or overlaps");
      at = e;
    }
    check(at == kv_len, "a tile's splits end at its last query's position");
    const int32_t merges = merges_of.count(key) ? merges_of[key] : 0;
    check(merges == (ids.size() > 1 ? 1 : 0), "a split tile has one merge, an unsplit one none");
    for (int32_t i : ids) {
      const int32_t slot = plan.tasks[i].slot;
      if (ids.size() == 1) {
        check(slot == -1, "an unsplit tile writes the output");
      } else if (slot < 0 || slot >= plan.num_slots || slot_owner[slot] != -1) {
        fail("a split's slot out of range or taken twice");
      } else {
        slot_owner[slot] = i;
      }
    }
  }
  // The persistent grid's blocks: context sums within twice the longest wide task.
  if (plan.num_wide > 0) {
    std::vector<int64_t> sums(plan.wide_grid, 0);
    int64_t longest = 0;
    for (int32_t i = 0; i < plan.num_wide; i++) {
      const int64_t len = plan.tasks[i].kv_end - plan.tasks[i].kv_begin;
      sums[i % plan.wide_grid] += len;
      longest = std::max(longest, len);
    }
    const auto [lo, hi] = std::minmax_element(sums.begin(), sums.end());
    check(*hi - *lo <= 2 * longest, "the wide grid's blocks are level within twice the longest task");
  }
}

}  // namespace

int multiquery_plan_test(uint64_t seed, int iterations) {
  std::mt19937_64 rng(seed ^ 0x6d71ull);
  auto pick = [&](int lo, int hi) { return (int)std::uniform_int_distribution<int>(lo, hi)(rng); };
  int64_t tasks = 0, wide = 0;
  MqPlan plan;
  for (int i = 0; i < iterations; i++) {
    const MqPlanShape shape{pick(1, 8), pick(1, 16), pick(1, 600), pick(0, 1) ? 256 : 64, pick(0, 2) ? pick(1, 300) : 0,
                            pick(0, 1) ? 16 : pick(1, 128)};
    plan.rows.clear();
    const int batch = pick(1, 6);
    for (int32_t b = 0, token = 0; b < batch; b++) {
      const int32_t q_len = pick(0, 3) == 0 ? pick(100, 2500) : pick(2, 24);
      const int32_t seq_len = q_len + pick(0, 9000);
      plan.rows.push_back(MqRow{b, seq_len, q_len, token});
      token += q_len;
    }
    char buf[160];
    snprintf(buf, sizeof buf, "#%d (seed %llu): %d rows, heads %d, group %d, wave %d, wide wave %d", i,
             (unsigned long long)seed, batch, shape.num_kv_heads, shape.group, shape.wave, shape.wide_wave);
    where = buf;
    plan_multiquery(shape, plan);
    check_section(shape, plan);
    tasks += (int64_t)plan.tasks.size();
    wide += plan.num_wide;
  }
  // A chunk of 2048 tokens over 4096 at group 4, 8 KV heads, one H200 wave of wide blocks: 32-token
  // tiles, 64 per head, each over its whole context (the tiles alone fill the grid several times).
  {
    where = "chunk 2048 over 4096";
    plan.rows.assign(1, MqRow{0, 4096, 2048, 0});
    plan_multiquery(MqPlanShape{8, 4, 264, 256, 132}, plan);
    check_section(MqPlanShape{8, 4, 264, 256, 132}, plan);
    check(plan.num_wide == 512 && plan.tasks.size() == 512 && plan.merges.empty() && plan.wide_grid == 132,
          "512 unsplit wide tasks on 132 blocks");
    plan_multiquery(MqPlanShape{8, 4, 264, 256, 0}, plan);
    check(plan.num_wide == 0 && plan.tasks.size() == 1024, "without wide tiles, 1024 narrow ones");
  }
  printf("multiquery plan-test: %d sections (%lld tasks, %lld wide), %d failures\n", iterations, (long long)tasks,
         (long long)wide, failures);
  return failures;
}
