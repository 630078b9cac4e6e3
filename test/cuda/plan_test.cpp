// Native test of the planner (cuda/src/core/plan.cpp and its strategies in cuda/src/core/plan/): each
// strategy, called directly and through the chooser, on random shapes, batches and settings, must give a
// plan image (plan_image.h) in which
//   - every token of every (row, head) is covered exactly once: static tasks' ranges tile [0, seq_len);
//     a claiming row's splits own whole tiles that tile [0, shared part) and share the rest;
//   - every (row, head, split) appears once, splits within 0..num_splits-1, partial slots disjoint (a
//     row of several queries takes that many slots a split) and rows carry their queries;
//   - tasks and partial slots stay within max_plan_tasks, splits within the 16 bits of head_split;
//   - boundaries are page-aligned (tile-aligned for the tail's big tasks and claimed tiles);
//   - the queue is longest first (rows by their longest task; the tail's pieces by length).
// And the images themselves must not change when the planner is only made faster: with the default
// iterations and seed, the digest of every image (and max_splits) must equal kImagesDigest, the digest
// the recorded planner gave. A change meant to alter plans updates it (plan-test prints it).
// Built by `zig build` into zig-out/bin/plan-test and run by test/plan.test.ts; exits 1 on a failure.
//   plan-test [iterations per strategy (default 1500)] [seed] [--hashes: one digest per image, for diffs]
#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "../../cuda/src/core/plan/plan_builder.h"
#include "persistentkv.h"

namespace {

using namespace pkv;

int failures = 0;
std::string where;  // the case being checked, for messages

void fail(const char *fmt, ...) {
  if (failures++ >= 20) return;
  va_list args;
  va_start(args, fmt);
  fprintf(stderr, "FAIL %s: ", where.c_str());
  vfprintf(stderr, fmt, args);
  fprintf(stderr, "\n");
  va_end(args);
}
#define CHECK(cond, ...) \
  do {                   \
    if (!(cond)) {       \
      fail(__VA_ARGS__); \
      return;            \
    }                    \
  } while (0)

struct Case {
  PlanShape shape;
  PlanSettings settings;
  std::vector<int32_t> table_rows, seq_lens;
  std::vector<int32_t> q_counts, q_firsts;  // empty: one query a row
  PlanQueries queries() const { return q_counts.empty() ? PlanQueries{} : PlanQueries{q_counts.data(), q_firsts.data()}; }
};

// A third of the cases get rows of several queries (speculative rows: 1-16 each), drawn from their own
// generator so that the others' lengths stay those of the recorded run.
void add_queries(std::mt19937_64 &qrng, Case &c) {
  if (qrng() % 3 != 0) return;
  const int32_t most = qrng() % 2 ? 4 : 16;
  for (size_t b = 0, first = 0; b < c.seq_lens.size(); b++) {
    const int32_t n = std::min<int32_t>(c.seq_lens[b], 1 + (int32_t)(qrng() % most));
    c.q_counts.push_back(n);
    c.q_firsts.push_back((int32_t)first);
    first += n;
  }
}

enum class Strategy { kChooserBaseline, kChooserPersistent, kBaselineChunks, kBalancedWaves, kDynamicTail, kClaiming };
const char *name_of(Strategy s) {
  switch (s) {
    case Strategy::kChooserBaseline: return "chooser/baseline";
    case Strategy::kChooserPersistent: return "chooser/persistent";
    case Strategy::kBaselineChunks: return "baseline_chunks";
    case Strategy::kBalancedWaves: return "balanced_waves";
    case Strategy::kDynamicTail: return "dynamic_tail";
    case Strategy::kClaiming: return "claiming";
  }
  return "?";
}

Case random_case(std::mt19937_64 &rng, Strategy strategy) {
  auto pick = [&](int64_t lo, int64_t hi) { return lo + (int64_t)(rng() % (uint64_t)(hi - lo + 1)); };
  Case c;
  const int32_t tiles[] = {16, 32, 64, 128};  // decode_tile_tokens over head dims and bodies
  const int32_t waves[] = {132, 264, 396, 528, 1056};
  c.shape.num_kv_heads = (int32_t)(pick(0, 5) == 0 ? pick(9, 64) : pick(1, 8));
  c.shape.page_size = 1 << pick(0, 8);
  c.shape.wave = waves[pick(0, 4)];
  c.shape.min_split_tokens = 128;
  c.shape.tile_tokens = tiles[pick(0, 3)];
  c.settings = PlanSettings{(int32_t)pick(0, 3) == 0 ? 0 : (int32_t)pick(1, 90), (int32_t)(pick(0, 1) ? 32 : pick(0, 40)),
                            (int32_t)pick(0, 4), (int32_t)(pick(0, 2) == 0 ? 0 : pick(1, 16))};
  const bool few = strategy == Strategy::kDynamicTail || strategy == Strategy::kClaiming || pick(0, 1);
  int64_t max_batch = few ? std::max<int64_t>(1, c.shape.wave / c.shape.num_kv_heads) : 1024;
  max_batch = std::min<int64_t>(max_batch, pick(0, 2) == 0 ? 8 : 600);
  const int32_t batch = (int32_t)pick(1, max_batch);
  const int64_t longest = std::vector<int64_t>{16, 700, 5000, 40000, 300000}[pick(0, 4)];
  for (int32_t b = 0; b < batch; b++) {
    c.table_rows.push_back((int32_t)pick(0, 1 << 20));
    const int64_t len = pick(0, 3) == 0 ? pick(1, 3) * c.shape.page_size : pick(1, longest);  // page edges too
    c.seq_lens.push_back((int32_t)std::max<int64_t>(1, len));
  }
  return c;
}

// FNV-1a, 64 bits: a portable digest of the images, so identity is checked without the old planner.
uint64_t fnv1a(uint64_t h, const void *data, size_t bytes) {
  const unsigned char *p = static_cast<const unsigned char *>(data);
  for (size_t i = 0; i < bytes; i++) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}
constexpr uint64_t kFnvBasis = 14695981039346656037ull;
// The digest of the default run (1500 iterations, seed 12345) as the planner of 32-byte rows builds it. Two:
// claiming and the tail order ties with std::sort, whose order of equal keys differs between libc++
// (Zig's C++, this test's build) and libstdc++ (g++, nvcc's host compiler, the library's build).
#if defined(_LIBCPP_VERSION)
constexpr uint64_t kImagesDigest = 0x62a63bc2dedd8511ull;
#else
constexpr uint64_t kImagesDigest = 0xf3e6861505cde96eull;
#endif

struct Built {
  std::vector<char> image;
  int32_t max_splits;
};

Built build(const Case &c, Strategy strategy) {
  const int32_t batch = (int32_t)c.seq_lens.size();
  Built out;
  // Room for twice the bound plus a guard, so an overrun is reported rather than undefined.
  out.image.assign(plan_image_bytes(batch, 2 * max_plan_tasks(c.shape, batch) + 64, 0), 0);
  void *image = out.image.data();
  if (strategy == Strategy::kChooserBaseline || strategy == Strategy::kChooserPersistent) {
    const int32_t kernel = strategy == Strategy::kChooserBaseline ? PKV_KERNEL_BASELINE : PKV_KERNEL_PERSISTENT;
    out.max_splits =
        build_workqueue(c.shape, c.settings, kernel, batch, c.table_rows.data(), c.seq_lens.data(), nullptr, c.queries(), image);
    return out;
  }
  PlanHeader &h = plan_header(image);
  h.batch = batch;
  h.tasks_offset = plan_tasks_offset(batch);
  PlanBuilder p{c.shape,        c.settings,       batch,           c.table_rows.data(), c.seq_lens.data(), nullptr,
                c.queries(), plan_rows(image), plan_tasks(image)};
  int64_t total_pages = 0, max_pages = 0;
  for (int32_t b = 0; b < batch; b++) total_pages += p.pages_of(b), max_pages = std::max(max_pages, p.pages_of(b));
  if (strategy == Strategy::kBaselineChunks) plan_baseline_chunks(p, max_pages);
  if (strategy == Strategy::kBalancedWaves) plan_balanced_waves(p, total_pages, max_pages);
  if (strategy == Strategy::kDynamicTail) plan_dynamic_tail(p, total_pages);
  if (strategy == Strategy::kClaiming) plan_claiming(p);
  h.num_tasks = (int32_t)(p.out - plan_tasks(image));
  h.num_partials = p.num_partials;
  h.claim_tile = p.claim_tile;
  h.deltas_offset = h.tasks_offset + h.num_tasks;
  out.max_splits = p.max_splits;
  return out;
}

void check_plan(const Case &c, Strategy strategy, const Built &built) {
  const void *image = built.image.data();
  const PlanHeader &h = plan_header(image);
  const PlanShape &s = c.shape;
  const int32_t batch = (int32_t)c.seq_lens.size(), heads = s.num_kv_heads;
  const int64_t limit = max_plan_tasks(s, batch);
  int32_t most_queries = 1;
  for (int32_t n : c.q_counts) most_queries = std::max(most_queries, n);
  CHECK(h.batch == batch && h.tasks_offset == plan_tasks_offset(batch), "header batch %d / tasks_offset %d", h.batch, h.tasks_offset);
  CHECK(h.num_tasks >= batch * heads && h.num_tasks <= limit, "%d tasks, outside %d..%lld", h.num_tasks, batch * heads, (long long)limit);
  CHECK(h.num_partials >= 0 && h.num_partials <= limit * most_queries, "%d partial slots over the %lld the engine holds",
        h.num_partials, (long long)limit * most_queries);
  CHECK(h.deltas_offset == h.tasks_offset + h.num_tasks, "deltas_offset %d", h.deltas_offset);
  const bool claims = h.claim_tile != 0;
  CHECK(!claims || strategy == Strategy::kClaiming || strategy == Strategy::kChooserPersistent, "claim_tile %d set", h.claim_tile);
  CHECK(!claims || h.claim_tile == s.tile_tokens, "claim_tile %d is not the tile %d", h.claim_tile, s.tile_tokens);

  // Rows: copied through, splits in range, partial slots disjoint and counted.
  const PlanRow *rows = plan_rows(image);
  int64_t slots = 0, splits_max = 1, expected_tasks = 0;
  std::vector<std::pair<int64_t, int64_t>> slot_ranges;
  for (int32_t b = 0; b < batch; b++) {
    const PlanRow &r = rows[b];
    CHECK(r.table_row == c.table_rows[b] && r.seq_len == c.seq_lens[b], "row %d: table row %d, seq_len %d", b, r.table_row, r.seq_len);
    const int32_t q_count = c.q_counts.empty() ? 1 : c.q_counts[b], q_first = c.q_firsts.empty() ? b : c.q_firsts[b];
    CHECK(r.q_count == q_count && r.q_first == q_first, "row %d: queries %d from %d, not %d from %d", b, r.q_count, r.q_first,
          q_count, q_first);
    CHECK(r.num_splits >= 1 && r.num_splits <= 0xffff, "row %d: %d splits", b, r.num_splits);
    splits_max = std::max<int64_t>(splits_max, r.num_splits);
    expected_tasks += (int64_t)r.num_splits * heads;
    if (r.num_splits > 1) {
      slot_ranges.push_back({r.partial_base, r.partial_base + (int64_t)r.num_splits * heads * q_count});
      slots += (int64_t)r.num_splits * heads * q_count;
    }
  }
  CHECK(slots == h.num_partials, "rows take %lld partial slots, the header says %d", (long long)slots, h.num_partials);
  std::sort(slot_ranges.begin(), slot_ranges.end());
  for (size_t i = 0; i < slot_ranges.size(); i++)
    CHECK(slot_ranges[i].first >= (i ? slot_ranges[i - 1].second : 0) && slot_ranges[i].second <= h.num_partials,
          "partial slots [%lld, %lld) overlap or overrun", (long long)slot_ranges[i].first, (long long)slot_ranges[i].second);
  CHECK(built.max_splits == splits_max, "max_splits %d, rows say %lld", built.max_splits, (long long)splits_max);
  CHECK(expected_tasks == h.num_tasks, "%d tasks, rows' splits x heads say %lld", h.num_tasks, (long long)expected_tasks);

  // Tasks: each (row, head, split) once; ranges per (row, head).
  const PlanTask *tasks = plan_tasks(image);
  std::vector<int64_t> base(batch + 1, 0);
  for (int32_t b = 0; b < batch; b++) base[b + 1] = base[b] + (int64_t)rows[b].num_splits * heads;
  std::vector<char> seen(base[batch], 0);
  std::vector<std::vector<std::pair<int32_t, int32_t>>> ranges((size_t)batch * heads);
  std::vector<int64_t> first_seen(batch, -1), longest_task(batch, 0);
  const int64_t tail_align = std::max(s.tile_tokens, s.page_size);
  for (int32_t i = 0; i < h.num_tasks; i++) {
    const PlanTask &t = tasks[i];
    CHECK(t.row >= 0 && t.row < batch, "task %d: row %d", i, t.row);
    const PlanRow &r = rows[t.row];
    const int32_t head = task_head(t), split = task_split(t);
    CHECK(head >= 0 && head < heads && split < r.num_splits, "task %d: head %d split %d of %d", i, head, split, r.num_splits);
    char &once = seen[base[t.row] + (int64_t)head * r.num_splits + split];
    CHECK(!once, "task %d: (row %d, head %d, split %d) twice", i, t.row, head, split);
    once = 1;
    if (first_seen[t.row] < 0) first_seen[t.row] = i;
    if (task_claims(h.claim_tile, r)) {
      CHECK(t.tok_begin % h.claim_tile == 0 && t.tok_end % h.claim_tile == 0 && t.tok_begin <= t.tok_end,
            "task %d: claiming range [%d, %d) off the %d-token tiles", i, t.tok_begin, t.tok_end, h.claim_tile);
    } else {
      CHECK(0 <= t.tok_begin && t.tok_begin < t.tok_end && t.tok_end <= r.seq_len, "task %d: range [%d, %d) of %d tokens", i,
            t.tok_begin, t.tok_end, r.seq_len);
      CHECK(t.tok_begin % s.page_size == 0, "task %d: begins at token %d, inside a page of %d", i, t.tok_begin, s.page_size);
      longest_task[t.row] = std::max<int64_t>(longest_task[t.row], t.tok_end - t.tok_begin);
    }
    ranges[(size_t)t.row * heads + head].push_back({t.tok_begin, t.tok_end});
  }

  // Coverage of every (row, head).
  for (int32_t b = 0; b < batch; b++)
    for (int32_t head = 0; head < heads; head++) {
      auto &rs = ranges[(size_t)b * heads + head];
      std::sort(rs.begin(), rs.end());
      const PlanRow &r = rows[b];
      if (task_claims(h.claim_tile, r)) {
        // Own tiles tile [0, shared part); the shared part is the same for every split; the claims then
        // hand out [shared part, ntiles) one tile each.
        const int32_t shared = rs[0].second;
        int32_t covered = 0;
        for (auto [begin, end] : rs) {
          CHECK(end == shared, "row %d head %d: splits disagree on the shared part (%d, %d)", b, head, end, shared);
          PlanTask t{b, head << 16, begin, end};
          const ClaimTiles ct = claim_tiles(t, r, h.claim_tile);
          if (ct.own_count == 0) continue;
          CHECK(ct.own_first * h.claim_tile == covered, "row %d head %d: own tiles from %d, covered to token %d", b, head,
                ct.own_first, covered);
          covered = (ct.own_first + ct.own_count) * h.claim_tile;
        }
        CHECK(covered == shared, "row %d head %d: own tiles cover to token %d, the shared part starts at %d", b, head, covered, shared);
        CHECK(shared <= claim_tiles(PlanTask{b, 0, 0, shared}, r, h.claim_tile).ntiles * h.claim_tile,
              "row %d head %d: shared part at %d past the row's tiles", b, head, shared);
      } else {
        int32_t at = 0;
        for (auto [begin, end] : rs) {
          CHECK(begin == at, "row %d head %d: token %d follows %d (gap or overlap)", b, head, begin, at);
          at = end;
        }
        CHECK(at == r.seq_len, "row %d head %d: covered to %d of %d tokens", b, head, at, r.seq_len);
      }
    }

  // Strategy-specific shape of the queue.
  if (strategy == Strategy::kBaselineChunks) {
    const bool full_wave = (int64_t)batch * heads >= s.wave;
    for (int32_t b = 0; b < batch; b++) {
      CHECK(!full_wave || rows[b].num_splits == 1, "row %d split %d times though rows fill the wave", b, rows[b].num_splits);
      auto &rs = ranges[(size_t)b * heads];
      for (size_t i = 0; i + 1 < rs.size(); i++)
        CHECK(rs[i].second - rs[i].first == rs[0].second - rs[0].first, "row %d: uneven baseline chunks", b);
    }
  }
  if (strategy == Strategy::kBalancedWaves || strategy == Strategy::kClaiming) {
    // Rows enter the queue longest first (by their longest static task; by tiles when claiming).
    std::vector<int32_t> order(batch);
    for (int32_t b = 0; b < batch; b++) order[b] = b;
    std::sort(order.begin(), order.end(), [&](int32_t x, int32_t y) { return first_seen[x] < first_seen[y]; });
    for (int32_t i = 0; i + 1 < batch; i++) {
      const int32_t x = order[i], y = order[i + 1];
      if (strategy == Strategy::kBalancedWaves) {
        const int64_t px = ceil_div(ceil_div(c.seq_lens[x], s.page_size), rows[x].num_splits);
        const int64_t py = ceil_div(ceil_div(c.seq_lens[y], s.page_size), rows[y].num_splits);
        CHECK(px >= py, "row %d (%lld pages per split) queued before row %d (%lld)", x, (long long)px, y, (long long)py);
      } else {
        CHECK(ceil_div(c.seq_lens[x], s.tile_tokens) >= ceil_div(c.seq_lens[y], s.tile_tokens), "row %d queued before longer row %d", x, y);
      }
    }
  }
  if (strategy == Strategy::kDynamicTail) {
    // Big tasks first (one length, tile-aligned), then the tail's pieces, longest first.
    int32_t i = 0;
    const int32_t big = tasks[0].tok_end - tasks[0].tok_begin;
    for (; i < h.num_tasks && tasks[i].tok_begin % tail_align == 0 && task_split(tasks[i]) < rows[tasks[i].row].num_splits - 1 &&
           tasks[i].tok_end - tasks[i].tok_begin == big && tasks[i].tok_begin == task_split(tasks[i]) * big;
         i++) {
    }
    int64_t previous = INT64_MAX;
    for (int32_t j = i; j < h.num_tasks; j++) {
      const PlanTask &t = tasks[j];
      const int64_t pages = ceil_div(t.tok_end, s.page_size) - t.tok_begin / s.page_size;
      CHECK(pages <= previous, "tail task %d (%lld pages) after a shorter one (%lld)", j, (long long)pages, (long long)previous);
      CHECK(t.tok_begin % tail_align == 0 || t.tok_begin % s.page_size == 0, "tail task %d begins off a page", j);
      previous = pages;
    }
  }
}

}  // namespace

int shared_plan_test(uint64_t seed, int iterations);
int multiquery_plan_test(uint64_t seed, int iterations);

int main(int argc, char **argv) {
  const int iterations = argc > 1 ? atoi(argv[1]) : 1500;
  const uint64_t seed = argc > 2 ? strtoull(argv[2], nullptr, 10) : 12345;
  const bool hashes = argc > 3 && std::string(argv[3]) == "--hashes";
  const bool default_run = iterations == 1500 && seed == 12345;
  uint64_t digest = kFnvBasis;
  std::mt19937_64 rng(seed), qrng(seed ^ 0x9e3779b97f4a7c15ull);
  const Strategy strategies[] = {Strategy::kChooserBaseline, Strategy::kChooserPersistent, Strategy::kBaselineChunks,
                                 Strategy::kBalancedWaves,   Strategy::kDynamicTail,        Strategy::kClaiming};
  int64_t plans = 0, tasks = 0;
  for (Strategy strategy : strategies)
    for (int i = 0; i < iterations; i++) {
      Case c = random_case(rng, strategy);
      add_queries(qrng, c);
      if (strategy == Strategy::kDynamicTail && c.settings.tail_percent == 0) c.settings.tail_percent = 10;
      char buf[200];
      snprintf(buf, sizeof buf, "%s #%d (seed %llu): batch %zu, heads %d, page %d, wave %d, tile %d, settings %d/%d/%d/%d",
               name_of(strategy), i, (unsigned long long)seed, c.seq_lens.size(), c.shape.num_kv_heads, c.shape.page_size,
               c.shape.wave, c.shape.tile_tokens, c.settings.tail_percent, c.settings.tail_min_splits,
               c.settings.tail_end_tiles, c.settings.claim_min_tiles);
      where = buf;
      const Built built = build(c, strategy);
      check_plan(c, strategy, built);
      plans++;
      const PlanHeader &h = plan_header(built.image.data());
      tasks += h.num_tasks;
      uint64_t one = fnv1a(kFnvBasis, built.image.data(), 16 * (size_t)h.deltas_offset);
      one = fnv1a(one, &built.max_splits, sizeof built.max_splits);
      digest = fnv1a(digest, &one, sizeof one);
      if (hashes) printf("%s %016llx\n", buf, (unsigned long long)one);
    }
  printf("plan-test: %lld plans (%lld tasks) over %zu strategies, %d failures, images digest %016llx\n", (long long)plans,
         (long long)tasks, sizeof strategies / sizeof strategies[0], failures, (unsigned long long)digest);
  failures += shared_plan_test(seed, iterations);      // shared_plan_test.cpp
  failures += multiquery_plan_test(seed, iterations);  // multiquery_plan_test.cpp
  if (default_run && digest != kImagesDigest) {
    fprintf(stderr, "FAIL: the images digest %016llx differs from the recorded one (%016llx): the plans changed\n",
            (unsigned long long)digest, (unsigned long long)kImagesDigest);
    failures++;
  }
  return failures ? 1 : 0;
}
