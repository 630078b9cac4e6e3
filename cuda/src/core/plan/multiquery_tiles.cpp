// The multi-query planner (multiquery_plan.h). Every (row, KV head) gets tiles of mq_tile_tokens(group)
// query tokens (wide tiles for rows of more than wide_above query rows, where the shape has them). One
// split length serves each class of rows: a wave's share of its work, rounded to K/V tiles and at least
// min_split_tokens, so a step of many tiles (a long chunk) runs unsplit and a step of a few speculative
// rows over long contexts fills the GPU with splits, as the decode planner splits rows.
#include <algorithm>
#include <cstring>

#include "../multiquery_plan.h"

namespace pkv {

namespace {

constexpr int64_t kMqTaskCost = kMqKvTile;  // a task's fixed cost (start, partial write, merge), in tokens

// The split length of one class of rows (wide or narrow: `tile` query tokens a tile) over `wave`
// resident blocks.
int64_t choose_split(const MqPlan &plan, const std::vector<int32_t> &rows, int32_t tile, int32_t num_kv_heads,
                     int32_t wave_blocks, int32_t min_split_tokens) {
  int64_t work = 0;  // context tokens over all tiles of one head
  for (int32_t r : rows) {
    const MqRow &row = plan.rows[r];
    for (int32_t q0 = 0; q0 < row.q_len; q0 += tile) work += mq_position(row, std::min(row.q_len, q0 + tile) - 1) + 1;
  }
  const int64_t wave = std::max(1, wave_blocks);
  const int64_t share = (work * num_kv_heads + wave - 1) / wave;
  int64_t split = std::max<int64_t>(min_split_tokens, (share + kMqKvTile - 1) / kMqKvTile * kMqKvTile);
  // Each tile's last split is short, so `split` can make more tasks than a wave; the extra ones then run
  // after the first wave. The shortest split (in K/V tiles) whose tasks fit one wave takes its place where
  // it is expected to finish sooner: one wave ends with its longest task, more waves (list scheduling)
  // within the wave's share of all tasks plus the longest one. A task costs its tokens plus kMqTaskCost.
  int32_t longest = 0;
  for (int32_t r : rows) longest = std::max(longest, mq_position(plan.rows[r], plan.rows[r].q_len - 1) + 1);
  auto tasks_at = [&](int64_t len) {
    int64_t n = 0;
    for (int32_t r : rows) {
      const MqRow &row = plan.rows[r];
      for (int32_t q0 = 0; q0 < row.q_len; q0 += tile)
        n += (mq_position(row, std::min(row.q_len, q0 + tile) - 1) + len) / len;
    }
    return n * num_kv_heads;
  };
  const int64_t tasks = tasks_at(split);
  if (tasks > wave && tasks_at(longest) <= wave) {
    int64_t lo = split / kMqKvTile, hi = (longest + kMqKvTile - 1) / kMqKvTile;  // tasks_at(lo) > wave >= tasks_at(hi)
    while (hi - lo > 1) {
      const int64_t mid = (lo + hi) / 2;
      (tasks_at(mid * kMqKvTile) <= wave ? hi : lo) = mid;
    }
    const int64_t one_wave = std::min<int64_t>(hi * kMqKvTile, longest) + kMqTaskCost;
    const int64_t waves = (work * num_kv_heads + tasks * kMqTaskCost) / wave + std::min<int64_t>(split, longest) + kMqTaskCost;
    if (one_wave < waves) split = hi * kMqKvTile;
  }
  return split;
}

// The tasks (and merges) of `rows`, tiles of `tile` query tokens, the newest tiles of a row first (their
// contexts are the longest, so the GPU starts the long tasks first).
void emit_tasks(MqPlan &plan, const std::vector<int32_t> &rows, int32_t tile, int64_t split, int32_t num_kv_heads) {
  for (int32_t r : rows) {
    const MqRow &row = plan.rows[r];
    const int32_t tiles = (row.q_len + tile - 1) / tile;
    for (int32_t i = tiles - 1; i >= 0; i--) {
      const int32_t q0 = i * tile, count = std::min(tile, row.q_len - q0);
      const int32_t kv_len = mq_position(row, q0 + count - 1) + 1;
      const int32_t n = (int32_t)((kv_len + split - 1) / split);
      for (int32_t t = q0; t < q0 + count; t++) plan.pairs += mq_position(row, t) + 1;
      for (int32_t h = 0; h < num_kv_heads; h++) {
        if (n > 1) plan.merges.push_back(MqMerge{(int32_t)plan.tasks.size(), n, plan.num_slots, 0});
        for (int32_t k = 0; k < n; k++) {
          const int32_t begin = (int32_t)(k * split), end = (int32_t)std::min<int64_t>(kv_len, (k + 1) * split);
          plan.tasks.push_back(MqTask{r, h, q0, count, begin, end, n > 1 ? plan.num_slots++ : -1, 0});
        }
      }
    }
  }
}

// The wide tasks run on a persistent grid, block b taking tasks b, b + grid, ...: longest first, each
// wave of `grid` handed out in the opposite order of the one before (a snake), so that a block that
// took a long task takes a short one next and the blocks' sums stay level.
void order_wide(MqPlan &plan, int32_t grid) {
  const int32_t n = plan.num_wide;
  static thread_local std::vector<int32_t> by_length, at;
  static thread_local std::vector<MqTask> wide;
  by_length.resize(n);
  for (int32_t i = 0; i < n; i++) by_length[i] = i;
  std::stable_sort(by_length.begin(), by_length.end(), [&](int32_t a, int32_t b) {
    return plan.tasks[a].kv_end - plan.tasks[a].kv_begin > plan.tasks[b].kv_end - plan.tasks[b].kv_begin;
  });
  wide.assign(plan.tasks.begin(), plan.tasks.begin() + n);
  at.resize(n);  // at[old index] = new index
  for (int32_t i = 0; i < n; i++) {
    const int32_t k = i / grid, j = i % grid, width = std::min(grid, n - k * grid);
    at[by_length[i]] = k * grid + (k % 2 == 0 ? j : width - 1 - j);
  }
  for (int32_t i = 0; i < n; i++) plan.tasks[at[i]] = wide[i];
  for (MqMerge &m : plan.merges)
    if (m.task < n) m.task = at[m.task];  // any task of the tile serves the merge (row, q_begin, q_count)
}

}  // namespace

void plan_multiquery(const MqPlanShape &s, MqPlan &plan) {
  plan.tasks.clear();
  plan.merges.clear();
  plan.num_wide = 0;
  plan.wide_grid = 0;
  plan.num_slots = 0;
  plan.pairs = 0;
  static thread_local std::vector<int32_t> wide_rows, narrow_rows;
  wide_rows.clear();
  narrow_rows.clear();
  for (int32_t r = 0; r < (int32_t)plan.rows.size(); r++)
    (s.wide_wave > 0 && (int64_t)plan.rows[r].q_len * s.group > s.wide_above ? wide_rows : narrow_rows).push_back(r);
  if (!wide_rows.empty()) {
    const int32_t tile = mq_tile_tokens(s.group, true);
    emit_tasks(plan, wide_rows, tile, choose_split(plan, wide_rows, tile, s.num_kv_heads, s.wide_wave, s.min_split_tokens),
               s.num_kv_heads);
    plan.num_wide = (int32_t)plan.tasks.size();
    plan.wide_grid = std::min(plan.num_wide, s.wide_wave);
    order_wide(plan, plan.wide_grid);
  }
  if (!narrow_rows.empty()) {
    const int32_t tile = mq_tile_tokens(s.group);
    emit_tasks(plan, narrow_rows, tile, choose_split(plan, narrow_rows, tile, s.num_kv_heads, s.wave, s.min_split_tokens),
               s.num_kv_heads);
  }
}

int64_t mq_plan_bytes(const MqPlan &p) {
  return mq_image_bytes((int64_t)p.rows.size(), (int64_t)p.tasks.size(), (int64_t)p.merges.size());
}

void write_mq_image(const MqPlan &p, void *image) {
  MqHeader header{(int32_t)p.rows.size(), (int32_t)p.tasks.size(), (int32_t)p.merges.size(), p.num_wide, p.wide_grid,
                  {0, 0, 0}};
  char *at = static_cast<char *>(image);
  auto put = [&](const void *src, size_t bytes) {
    if (bytes) memcpy(at, src, bytes);
    at += bytes;
  };
  put(&header, sizeof header);
  put(p.rows.data(), p.rows.size() * sizeof(MqRow));
  put(p.tasks.data(), p.tasks.size() * sizeof(MqTask));
  put(p.merges.data(), p.merges.size() * sizeof(MqMerge));
}

}  // namespace pkv
