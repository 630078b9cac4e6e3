// Native test of the shared-prefix planner (cuda/src/core/plan/shared_prefix.cpp) on random sharing
// trees: block tables whose rows copy a random earlier row's leading pages (a fork, a fork of a fork, a
// prefix hit) and add their own, beside rows that share nothing. Each section must satisfy:
//   - every member of a task holds the task's page ids over its range, and the range ends before the
//     member's own tokens (at least one of them);
//   - per (row, head) the pieces 0 .. pieces-1 are each written by exactly one task, and their ranges,
//     in piece order, tile the row's columns [0, first_column) (one chain of nested nodes from column 0);
//   - a row without a combine starts at column 0; slots of the rows are disjoint and within num_slots;
//   - tasks, members and slots stay within the capacities, member tiles within kShTileRows, tasks are
//     longest first, ranges page-aligned, unique_kv_bytes counts each shared range once;
//   - a table with no two equal first pages, mode OFF and groups over kShTileRows give an empty section.
// Called from plan_test.cpp's main (zig-out/bin/plan-test).
#include <algorithm>
#include <cstdio>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "../../cuda/src/core/shared_plan.h"
#include "persistentkv.h"

namespace {

using namespace pkv;

int failures = 0;
std::string where;

#define SH_CHECK(cond, ...)                                   \
  do {                                                        \
    if (!(cond)) {                                            \
      if (failures++ < 20) {                                  \
        fprintf(stderr, "FAIL shared %s: ", where.c_str());   \
        fprintf(stderr, __VA_ARGS__);                         \
        fprintf(stderr, "\n");                                \
      }                                                       \
      return;                                                 \
    }                                                         \
  } while (0)

struct Table {
  int32_t width = 0;
  std::vector<int32_t> entries;        // [rows][width]
  std::vector<int32_t> rows, seq_lens;  // per decode row
};

// Rows that copy a random earlier row's leading pages (or nothing) and add fresh pages of their own.
Table random_table(std::mt19937_64 &rng, int32_t batch, int32_t page_size, bool sharing) {
  auto uniform = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  const int32_t max_pages = (int32_t)std::max<int64_t>(2, uniform(2, page_size == 1 ? 600 : 80));
  std::vector<std::vector<int32_t>> pages(batch);
  int32_t next_page = 0;
  for (int32_t b = 0; b < batch; b++) {
    std::vector<int32_t> &p = pages[b];
    if (sharing && b > 0 && uniform(0, 3) > 0) {
      const std::vector<int32_t> &from = pages[uniform(0, b - 1)];
      p.assign(from.begin(), from.begin() + uniform(0, (int64_t)from.size()));
    }
    const int64_t total = std::max<int64_t>((int64_t)p.size() + uniform(0, 3), uniform(1, max_pages));
    while ((int64_t)p.size() < total) p.push_back(next_page++);
  }
  Table t;
  for (const auto &p : pages) t.width = std::max(t.width, (int32_t)p.size());
  // Decode rows use block-table rows in a random order, so members of a node need not be adjacent.
  std::vector<int32_t> order(batch);
  for (int32_t b = 0; b < batch; b++) order[b] = b;
  std::shuffle(order.begin(), order.end(), rng);
  t.entries.assign((size_t)batch * t.width, -1);
  for (int32_t b = 0; b < batch; b++) {
    std::copy(pages[b].begin(), pages[b].end(), t.entries.begin() + (int64_t)order[b] * t.width);
    t.rows.push_back(order[b]);
    const int64_t full = (int64_t)pages[b].size() * page_size;
    t.seq_lens.push_back((int32_t)(full - uniform(0, page_size - 1)));
  }
  return t;
}

void check_section(const ShPlanShape &shape, const Table &t, const ShPlan &plan) {
  const int32_t batch = (int32_t)t.rows.size(), P = shape.page_size, H = shape.num_kv_heads;
  auto entry = [&](int32_t table_row, int64_t column) { return t.entries[(int64_t)table_row * t.width + column]; };
  SH_CHECK((int32_t)plan.first_column.size() == batch, "first_column has %zu entries", plan.first_column.size());
  SH_CHECK((int64_t)plan.tasks.size() <= shape.max_tasks, "%zu tasks > %d", plan.tasks.size(), shape.max_tasks);
  SH_CHECK((int64_t)plan.members.size() <= shape.max_members, "%zu members > %d", plan.members.size(), shape.max_members);
  SH_CHECK(plan.num_slots <= shape.max_slots, "%d slots > %d", plan.num_slots, shape.max_slots);
  // Rows: combines, slots, first columns.
  std::vector<int32_t> pieces(batch, 0), slot_base(batch, -1);
  std::vector<bool> slot_used(plan.num_slots, false);
  int32_t shared_rows = 0;
  for (const ShCombine &c : plan.combines) {
    SH_CHECK(c.row >= 0 && c.row < batch && slot_base[c.row] < 0, "combine row %d", c.row);
    SH_CHECK(c.pieces >= 1, "row %d combines %d pieces", c.row, c.pieces);
    slot_base[c.row] = c.slot_base;
    pieces[c.row] = c.pieces;
    shared_rows++;
    for (int64_t s = c.slot_base; s < c.slot_base + (int64_t)c.pieces * H; s++) {
      SH_CHECK(s >= 0 && s < plan.num_slots && !slot_used[s], "row %d's slot %lld", c.row, (long long)s);
      slot_used[s] = true;
    }
  }
  SH_CHECK(shared_rows == plan.shared_rows, "shared_rows %d, %d combines", plan.shared_rows, shared_rows);
  for (int32_t b = 0; b < batch; b++) {
    const int64_t fc = plan.first_column[b];
    SH_CHECK((fc == 0) == (pieces[b] == 0), "row %d: first column %lld, %d pieces", b, (long long)fc, pieces[b]);
    SH_CHECK(fc * P < t.seq_lens[b], "row %d keeps no own token (first column %lld, length %d)", b, (long long)fc,
             t.seq_lens[b]);
  }
  // Tasks: members hold the pages; each (row, head, piece) once; ranges tile each chain.
  std::vector<std::vector<std::pair<int32_t, int32_t>>> ranges((size_t)batch * H);  // per (row, head): by piece
  for (int32_t b = 0; b < batch; b++)
    for (int32_t h = 0; h < H; h++) ranges[(size_t)b * H + h].assign(pieces[b], {-1, -1});
  std::set<std::tuple<int32_t, int32_t, int32_t>> distinct;
  int64_t shared_tokens = 0;
  int32_t previous = INT32_MAX;
  for (const ShTask &task : plan.tasks) {
    const int32_t len = task.kv_end - task.kv_begin;
    SH_CHECK(len > 0 && len <= previous, "task range [%d, %d) after one of %d tokens", task.kv_begin, task.kv_end, previous);
    previous = len;
    SH_CHECK(task.kv_begin % P == 0, "task begins at token %d (page %d)", task.kv_begin, P);
    SH_CHECK(task.head >= 0 && task.head < H, "task head %d", task.head);
    SH_CHECK(task.member_count >= 1 && task.member_count * shape.group <= kShTileRows, "%d members x group %d",
             task.member_count, shape.group);
    SH_CHECK(task.member_first >= 0 && task.member_first + task.member_count <= (int32_t)plan.members.size(),
             "members %d + %d", task.member_first, task.member_count);
    if (distinct.insert({task.table_row, task.kv_begin, task.kv_end}).second) shared_tokens += len;
    for (int32_t i = 0; i < task.member_count; i++) {
      const ShMember &m = plan.members[task.member_first + i];
      SH_CHECK(m.row >= 0 && m.row < batch && m.slot_base == slot_base[m.row], "member row %d slot %d", m.row, m.slot_base);
      SH_CHECK(task.kv_end <= (int64_t)plan.first_column[m.row] * P, "row %d reads [%d, %d) shared, own from column %d",
               m.row, task.kv_begin, task.kv_end, plan.first_column[m.row]);
      for (int64_t c = task.kv_begin / P; c < (task.kv_end + P - 1) / P; c++)
        SH_CHECK(entry(t.rows[m.row], c) == entry(task.table_row, c), "row %d column %lld holds page %d, the task's %d",
                 m.row, (long long)c, entry(t.rows[m.row], c), entry(task.table_row, c));
      SH_CHECK(task.piece >= 0 && task.piece < pieces[m.row], "row %d piece %d of %d", m.row, task.piece, pieces[m.row]);
      auto &r = ranges[(size_t)m.row * H + task.head][task.piece];
      SH_CHECK(r.first < 0, "row %d head %d piece %d written twice", m.row, task.head, task.piece);
      r = {task.kv_begin, task.kv_end};
    }
  }
  for (int32_t b = 0; b < batch; b++)
    for (int32_t h = 0; h < H; h++) {
      int32_t at = 0;
      for (const auto &r : ranges[(size_t)b * H + h]) {
        SH_CHECK(r.first == at, "row %d head %d: a piece starts at %d, the chain is at %d", b, h, r.first, at);
        at = r.second;
      }
      SH_CHECK((int64_t)at == (int64_t)plan.first_column[b] * P, "row %d head %d: chain ends at %d, own part at column %d",
               b, h, at, plan.first_column[b]);
    }
  int64_t own = 0;
  for (int32_t b = 0; b < batch; b++) own += t.seq_lens[b] - (int64_t)plan.first_column[b] * P;
  SH_CHECK(plan.unique_kv_bytes == (own + shared_tokens) * shape.token_bytes * H, "unique_kv_bytes %lld, expected %lld",
           (long long)plan.unique_kv_bytes, (long long)((own + shared_tokens) * shape.token_bytes * H));
  // The written image holds the same records.
  std::vector<char> image(sh_plan_bytes(plan));
  write_sh_image(plan, image.data());
  const ShHeader &header = sh_header(image.data());
  SH_CHECK(header.num_tasks == (int32_t)plan.tasks.size() && header.num_members == (int32_t)plan.members.size() &&
               header.num_combines == (int32_t)plan.combines.size() && header.num_slots == plan.num_slots,
           "image header");
  if (!plan.combines.empty())
    SH_CHECK(sh_combines(image.data())[plan.combines.size() - 1].row == plan.combines.back().row, "image combines");
  if (!plan.members.empty())
    SH_CHECK(sh_members(image.data())[plan.members.size() - 1].row == plan.members.back().row, "image members");
}

}  // namespace

// Returns the failures found over `iterations` random tables.
int shared_plan_test(uint64_t seed, int iterations) {
  std::mt19937_64 rng(seed);
  auto uniform = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  const int32_t page_sizes[] = {1, 16, 64, 128};
  const int32_t groups[] = {1, 2, 4, 5, 8, 16, 64, 65};
  int64_t tasks = 0, shared = 0;
  ShPlan plan;
  for (int i = 0; i < iterations; i++) {
    const int32_t P = page_sizes[uniform(0, 3)];
    const bool sharing = uniform(0, 9) > 0;
    const int32_t batch = (int32_t)uniform(1, uniform(0, 3) == 0 ? 300 : 24);
    const Table t = random_table(rng, batch, P, sharing);
    ShPlanShape shape{};
    shape.num_kv_heads = (int32_t)uniform(1, 8);
    shape.group = groups[uniform(0, 7)];
    shape.page_size = P;
    shape.head_dim = 128;
    shape.token_bytes = 512;
    shape.wave = (int32_t)uniform(1, 600);
    shape.task_flops_per_us = 320e6, shape.task_row_tile = 64;
    shape.decode_beside = uniform(0, 1) == 1;
    shape.mode = uniform(0, 9) == 0 ? PKV_SHARED_OFF : uniform(0, 3) == 0 ? PKV_SHARED_AUTO : PKV_SHARED_ALWAYS;
    const bool tight = uniform(0, 3) == 0;  // capacities that force coarser splits and fewer nodes
    shape.max_tasks = (int32_t)(tight ? uniform(0, 40) : 1 << 20);
    shape.max_members = (int32_t)(tight ? uniform(0, 2 * batch) : 1 << 20);
    shape.max_slots = (int32_t)(tight ? uniform(0, 20 * shape.num_kv_heads) : 1 << 20);
    char buf[200];
    snprintf(buf, sizeof buf, "#%d (seed %llu): batch %d, page %d, heads %d, group %d, wave %d, mode %d, caps %d/%d/%d", i,
             (unsigned long long)seed, batch, P, shape.num_kv_heads, shape.group, shape.wave, shape.mode, shape.max_tasks,
             shape.max_members, shape.max_slots);
    where = buf;
    plan_shared(shape, batch, t.rows.data(), t.seq_lens.data(), t.entries.data(), t.width, plan);
    check_section(shape, t, plan);
    if (!plan.tasks.empty() && (shape.mode == PKV_SHARED_OFF || shape.group > kShTileRows)) {
      failures++;
      fprintf(stderr, "FAIL shared %s: a section under mode OFF or group %d\n", where.c_str(), shape.group);
    }
    if (!plan.tasks.empty() && shape.mode == PKV_SHARED_AUTO) {
      // Bytes saved: every member's read of a range, less one read per range and head.
      std::set<std::tuple<int32_t, int32_t, int32_t>> ranges;
      int64_t reads = 0, once = 0;
      for (const ShTask &task : plan.tasks) {
        reads += (int64_t)task.member_count * (task.kv_end - task.kv_begin);
        if (ranges.insert({task.table_row, task.kv_begin, task.kv_end}).second) once += task.kv_end - task.kv_begin;
      }
      // AUTO's model (shared_prefix.cpp) shares only when 0.85 x (unique + 0.6 x repeats) exceeds unique
      // plus 15 us of reads at 4.3 TB/s: so never with repeats under 15 us x 4.3e6 B/us / 0.51.
      const int64_t saved = (reads - once * shape.num_kv_heads) * shape.token_bytes;
      if (saved < (int64_t)(15 * 4.3e6 / 0.51)) {
        failures++;
        fprintf(stderr, "FAIL shared %s: AUTO shared a step that saves %lld bytes\n", where.c_str(), (long long)saved);
      }
    }
    // With no two rows starting alike nothing is shared.
    std::set<int32_t> first;
    for (int32_t b = 0; b < batch; b++) first.insert(t.entries[(int64_t)t.rows[b] * t.width]);
    if ((int32_t)first.size() == batch && !plan.tasks.empty()) {
      failures++;
      fprintf(stderr, "FAIL shared %s: a section though no two rows start alike\n", where.c_str());
    }
    tasks += (int64_t)plan.tasks.size();
    shared += !plan.tasks.empty();
  }
  {
    // A chain of forks as deep as the batch: row b holds row b - 1's pages and one more, then its own.
    const int32_t batch = 1500;
    Table t;
    t.width = batch + 2;
    t.entries.assign((size_t)batch * t.width, -1);
    for (int32_t b = 0; b < batch; b++) {
      for (int32_t c = 0; c <= b; c++) t.entries[(int64_t)b * t.width + c] = c;
      t.entries[(int64_t)b * t.width + b + 1] = batch + b;
      t.rows.push_back(b);
      t.seq_lens.push_back(b + 2);
    }
    ShPlanShape shape{2, 4, 1, 128, 512, 264, PKV_SHARED_ALWAYS, 1 << 22, 1 << 24, 1 << 26};
    where = "a chain of 1500 forks";
    plan_shared(shape, batch, t.rows.data(), t.seq_lens.data(), t.entries.data(), t.width, plan);
    check_section(shape, t, plan);
    if (plan.shared_rows != batch) {  // every row shares page 0
      failures++;
      fprintf(stderr, "FAIL shared %s: %d shared rows\n", where.c_str(), plan.shared_rows);
    }
  }
  {
    // B64 behind a 16K-token prefix with 256-1K own tokens (bench/workloads/shared.json's b64-prefix16k):
    // where the decode runs beside the tasks, its tensor-bound tasks take 96 of the 132 blocks (the
    // H200 sweep's best, bench/results/shared-waves-2026-12-03-h200.txt), else all of them; with 16 rows
    // (64 query rows a tile, memory-bound tasks) all of them either way.
    for (const int32_t batch : {64, 16}) {
      Table t;
      const int32_t prefix_pages = 1024, page = 16;
      t.width = prefix_pages + 64;
      t.entries.assign((size_t)batch * t.width, -1);
      int32_t next = prefix_pages;
      for (int32_t b = 0; b < batch; b++) {
        const int32_t own = 256 + (b * 389) % 769;
        for (int32_t c = 0; c < prefix_pages; c++) t.entries[(int64_t)b * t.width + c] = c;
        for (int32_t c = 0; c < (own + page - 1) / page; c++) t.entries[(int64_t)b * t.width + prefix_pages + c] = next++;
        t.rows.push_back(b);
        t.seq_lens.push_back(prefix_pages * page + own);
      }
      for (const bool beside : {false, true}) {
        ShPlanShape shape{8, 4, page, 128, 512, 132, PKV_SHARED_AUTO, 1 << 20, 1 << 20, 1 << 20, 320e6, 64, beside};
        char buf[100];
        snprintf(buf, sizeof buf, "B%d behind 16K, decode %s", batch, beside ? "beside" : "after");
        where = buf;
        plan_shared(shape, batch, t.rows.data(), t.seq_lens.data(), t.entries.data(), t.width, plan);
        check_section(shape, t, plan);
        const size_t want = batch == 64 && beside ? 96 : 128;
        if (plan.tasks.size() != want) {
          failures++;
          fprintf(stderr, "FAIL shared %s: %zu tasks, want %zu\n", where.c_str(), plan.tasks.size(), want);
        }
      }
    }
  }
  printf("shared-plan-test: %d tables, %lld with a section, %lld tasks, %d failures\n", iterations, (long long)shared,
         (long long)tasks, failures);
  return failures;
}
