// The shared-prefix planner (shared_plan.h): the sharing tree of a step's block table, the policy that
// decides whether reading its nodes once pays, and the node splits cut into tasks.
//
// Detection works column by column from column 0: rows are grouped by the page they hold at a column
// (a sort of (page, row) keys; in the common step no two rows start alike, which one pass over a hash
// table of first pages tells, and that is all it costs);
// a group of two rows or more becomes a node that runs while every member holds its leader's pages, and
// the node's rows are grouped again at its end column (a fork of a fork is a child node).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../shared_plan.h"
#include "persistentkv.h"

namespace pkv {

namespace {

// AUTO's cost model of one layer, from the H200's measurements (bench/results/shared-*): a step reads its
// distinct K/V at the streaming rate; an unshared step reads every row's copy of a shared page, the
// repeats partly from L2 (rows that share pages run together), at about 0.6 of an HBM read each; the
// shared tasks also pay their tensor-core time (FLOPs at the task kernel's rate, ShPlanShape) and the
// section's fixed cost (two more launches, the partials and the combine). A step shares only when the
// model expects it at most kAutoMaxTimeRatio of the unshared time, so a step it misjudges by the
// model's error is still no slower.
constexpr double kStreamBytesPerUs = 4.3e6;       // HBM streaming read, bytes per microsecond
constexpr double kRepeatCost = 0.6;               // an unshared step's repeated page, in HBM reads
constexpr double kSectionFixedUs = 15;            // two launches, partial writes, the combine, imbalance
constexpr double kAutoMaxTimeRatio = 0.85;
// AUTO emits no node shorter than this: a shorter node costs every row a piece and a combine for a
// read that the row's own tasks hide behind their pipeline fill.
constexpr int32_t kAutoMinNodeTokens = 256;
constexpr int32_t kSplitGranule = 64;     // split lengths are multiples of this (the kernels' key tile)
constexpr int32_t kMinSplitTokens = 512;  // shorter splits write more partials than they save in balance
// Where the decode kernel starts beside the tasks (ShPlanShape::decode_beside), tensor-bound tasks take
// only a share of the task blocks and leave the rest of the SMs to the rows' own tokens: kBesideBase +
// kBesideSlope x (the tasks' tensor time over it plus the own tokens' read time), from one H200 sweep of
// 100, 75, 60 and 45% over the shared workloads (bench/results/shared-waves-2026-12-03-h200.txt: B64
// behind 16K best at 75%, behind 8K at 60%, B128 behind 2K at 45%). Tasks of 64 query rows or fewer are
// memory-bound and keep every block, and so does a share above kBesideMaxShare: it frees too few SMs to
// pay for the coarser splits (the tree steps: 120 of 132 blocks ran 1.18x slower than all of them).
constexpr double kBesideBase = 0.45, kBesideSlope = 0.5, kBesideMaxShare = 0.85;
constexpr int32_t kBesideMinRows = 64;

struct Node {
  int32_t c0, c1;      // block-table columns
  int32_t parent;      // index into nodes, -1 at the root
  int32_t depth;
  int32_t first, count;  // its rows: node_rows[first .. first + count - 1] (decode rows, ascending)
  int32_t splits;
  int32_t step;        // tokens per split (a multiple of the granule; the last split may be shorter)
  int32_t piece0;      // pieces of its ancestors
  bool emitted;
};

struct Scratch {
  std::vector<int32_t> node_rows, usable;
  std::vector<Node> nodes;
  std::vector<int32_t> deepest;  // per row: its deepest emitted node, -1: none
  std::vector<int32_t> slot_base;
  struct Order {
    int32_t len, node, split, head;
  };
  std::vector<Order> order;
  std::vector<int32_t> first_pages;  // open-addressing table of the rows' column-0 pages (-1: empty)
  std::vector<int32_t> member_first;  // per node: its first entry in the plan's members
};

struct Detector {
  const int32_t *table = nullptr;
  int64_t stride = 0;
  const int32_t *rows = nullptr;
  const int32_t *usable = nullptr;  // per decode row: columns that may be shared
  Scratch *s = nullptr;

  const int32_t *entries(int32_t b) const { return table + (int64_t)rows[b] * stride; }

  std::vector<uint64_t> keys;
  std::vector<int32_t> group, members;
  std::vector<int32_t> pending;  // nodes whose rows are still to be grouped at their end column

  // The whole tree: the rows grouped at column 0, then each node's rows at its end, with a work list
  // rather than recursion (a chain of forks may be as deep as the batch is large).
  void detect(int32_t batch) {
    if (!first_pages_repeat(batch)) return;  // no two rows start alike: no node
    members.resize(batch);
    for (int32_t b = 0; b < batch; b++) members[b] = b;
    group_at(0, -1, 0);
    while (!pending.empty()) {
      const Node n = s->nodes[pending.back()];
      const int32_t index = pending.back();
      pending.pop_back();
      members.assign(s->node_rows.begin() + n.first, s->node_rows.begin() + n.first + n.count);
      group_at(n.c1, index, n.depth + 1);
    }
  }

  // Whether two rows with a usable column 0 hold the same page there (page ids are non-negative: checked
  // before planning). A table of at least twice the rows keeps probe chains short.
  bool first_pages_repeat(int32_t batch) {
    int bits = 4;
    while ((size_t{1} << bits) < 2 * (size_t)batch) bits++;
    const size_t size = size_t{1} << bits;
    std::vector<int32_t> &slots = s->first_pages;
    slots.assign(size, -1);
    for (int32_t b = 0; b < batch; b++) {
      if (usable[b] <= 0) continue;
      const int32_t page = entries(b)[0];
      // Knuth's multiplicative hash: the product's top bits (its low bits repeat for strided page ids).
      size_t i = ((uint32_t)page * 2654435761u) >> (32 - bits);
      for (; slots[i] >= 0; i = (i + 1) & (size - 1))
        if (slots[i] == page) return true;
      slots[i] = page;
    }
    return false;
  }

  // Groups `members` (decode rows) with usable columns past `column` by their page there; each group of
  // two rows or more becomes a node (child of `parent`) whose own rows are grouped later.
  void group_at(int32_t column, int32_t parent, int32_t depth) {
    keys.clear();
    for (int32_t b : members)
      if (usable[b] > column) keys.push_back((uint64_t)(uint32_t)entries(b)[column] << 32 | (uint32_t)b);
    std::sort(keys.begin(), keys.end());
    for (size_t i = 0; i < keys.size();) {
      size_t j = i + 1;
      while (j < keys.size() && keys[j] >> 32 == keys[i] >> 32) j++;
      if (j - i >= 2) {
        group.resize(j - i);
        for (size_t k = i; k < j; k++) group[k - i] = (int32_t)(uint32_t)keys[k];
        make_node(column, parent, depth);
      }
      i = j;
    }
  }

  // A node from `column` over `group` (all hold the same page there): its end is the first column where
  // a member differs from the leader or a member's usable columns end.
  void make_node(int32_t column, int32_t parent, int32_t depth) {
    const int32_t *lead = entries(group[0]);
    int32_t end = usable[group[0]];
    for (size_t i = 1; i < group.size(); i++) end = std::min(end, usable[group[i]]);
    // Members mostly hold the whole run: one memcmp each, and a search only where it differs.
    for (size_t i = 1; i < group.size() && end > column + 1; i++) {
      const int32_t *e = entries(group[i]);
      if (memcmp(lead + column + 1, e + column + 1, sizeof(int32_t) * (end - column - 1)) != 0)
        end = (int32_t)(std::mismatch(lead + column + 1, lead + end, e + column + 1).first - lead);
    }
    pending.push_back((int32_t)s->nodes.size());
    s->nodes.push_back(Node{column, end, parent, depth, (int32_t)s->node_rows.size(), (int32_t)group.size(), 1, 0, 0, false});
    s->node_rows.insert(s->node_rows.end(), group.begin(), group.end());
  }
};

// Nodes are emitted top-down: a node whose parent is not emitted is not either (a row's shared columns
// are one chain from column 0). Nodes are stored parents first, so one forward pass decides.
void choose_nodes(const ShPlanShape &shape, Scratch &s, int32_t max_depth) {
  for (Node &n : s.nodes) {
    const bool parent_ok = n.parent < 0 || s.nodes[n.parent].emitted;
    const int64_t tokens = (int64_t)(n.c1 - n.c0) * shape.page_size;
    const bool long_enough = shape.mode == PKV_SHARED_ALWAYS || tokens >= kAutoMinNodeTokens;
    n.emitted = parent_ok && n.count >= 2 && n.c1 > n.c0 && long_enough && n.depth <= max_depth;
  }
}

// A node's split of `len` tokens: even splits rounded up to the granule, counted again so none is empty.
struct NodeSplit {
  int32_t step, splits;
};
NodeSplit split_node(int64_t tokens, int64_t len, int64_t granule) {
  const int64_t n = std::max<int64_t>(1, (tokens + len - 1) / len);
  const int64_t step = std::min<int64_t>(((tokens + n - 1) / n + granule - 1) / granule * granule, tokens);
  return NodeSplit{(int32_t)step, (int32_t)((tokens + step - 1) / step)};
}

// Splits every emitted node with one split length (a multiple of the granule, at least kMinSplitTokens):
// at most one wave of tasks over all nodes where the nodes allow it. One wave, because each split's
// pieces cost a partial write and a combine read (the H200 measured 16 pieces slower than 8), and at most
// one, because a few tasks past the wave run alone in a second one (B64 behind 32K: 288 tasks on 264
// blocks took 1.31x the time of 512 tasks in two full waves). `coarsen` doubles the length that many times.
void choose_splits(const ShPlanShape &shape, Scratch &s, int64_t wave, int32_t coarsen) {
  const int32_t tile = sh_tile_members(shape.group);
  const int64_t granule = std::max<int64_t>(kSplitGranule, shape.page_size);
  int64_t weighted = 0, longest = 0;  // tokens x heads x member tiles; the longest node
  for (const Node &n : s.nodes)
    if (n.emitted) {
      const int64_t tokens = (int64_t)(n.c1 - n.c0) * shape.page_size;
      weighted += tokens * shape.num_kv_heads * ((n.count + tile - 1) / tile);
      longest = std::max(longest, tokens);
    }
  auto tasks_of = [&](int64_t len) {
    int64_t tasks = 0;
    for (const Node &n : s.nodes)
      if (n.emitted)
        tasks += (int64_t)split_node((int64_t)(n.c1 - n.c0) * shape.page_size, len, granule).splits * shape.num_kv_heads *
                 ((n.count + tile - 1) / tile);
    return tasks;
  };
  int64_t len = std::max<int64_t>(kMinSplitTokens, (weighted / wave + granule - 1) / granule * granule);
  // Rounding each node up can overshoot the wave: lengthen the splits until the tasks fit (a few steps).
  for (int32_t i = 0; i < 64 && len < longest && tasks_of(len) > wave; i++)
    len = (len + len / 16 + granule - 1) / granule * granule;
  for (int32_t i = 0; i < coarsen && len < (1ll << 31); i++) len *= 2;
  for (Node &n : s.nodes) {
    if (!n.emitted) continue;
    const NodeSplit sp = split_node((int64_t)(n.c1 - n.c0) * shape.page_size, len, granule);
    n.step = sp.step;
    n.splits = sp.splits;
    n.piece0 = n.parent < 0 ? 0 : s.nodes[n.parent].piece0 + s.nodes[n.parent].splits;
  }
}

struct Counts {
  int64_t tasks = 0, members = 0, slots = 0;
};
Counts count(const ShPlanShape &shape, const Scratch &s, int32_t batch) {
  const int32_t tile = sh_tile_members(shape.group);
  Counts c;
  for (const Node &n : s.nodes)
    if (n.emitted) {
      c.tasks += (int64_t)n.splits * shape.num_kv_heads * ((n.count + tile - 1) / tile);
      c.members += n.count;
    }
  for (int32_t b = 0; b < batch; b++)
    if (s.deepest[b] >= 0) {
      const Node &n = s.nodes[s.deepest[b]];
      c.slots += (int64_t)(n.piece0 + n.splits) * shape.num_kv_heads;
    }
  return c;
}

void find_deepest(Scratch &s, int32_t batch) {
  s.deepest.assign(batch, -1);
  for (size_t i = 0; i < s.nodes.size(); i++) {
    const Node &n = s.nodes[i];
    if (!n.emitted) continue;
    for (int32_t k = 0; k < n.count; k++) {
      int32_t &d = s.deepest[s.node_rows[n.first + k]];
      if (d < 0 || s.nodes[d].depth < n.depth) d = (int32_t)i;
    }
  }
}

// The emitted nodes' sizes as the cost model sees them (one layer).
struct Estimate {
  double unique = 0;      // bytes of the distinct K/V: shared runs once, each row's own tokens
  double own = 0;         // bytes of the rows' own tokens
  double repeats = 0;     // bytes an unshared step reads again for the shared runs
  double flops = 0;       // the tasks' tensor-core work, in whole row tiles of the kernel
  double wide_flops = 0;  // of it, in member tiles of more than kBesideMinRows query rows
};
Estimate estimate(const ShPlanShape &shape, Scratch &s, int32_t batch, const int32_t *seq_lens) {
  find_deepest(s, batch);
  const double token_bytes = (double)shape.token_bytes * shape.num_kv_heads;
  double shared_tokens = 0, own_tokens = 0, total_tokens = 0;
  Estimate e;
  const int32_t tile = sh_tile_members(shape.group);
  for (const Node &n : s.nodes) {
    if (!n.emitted) continue;
    const double tokens = (double)(n.c1 - n.c0) * shape.page_size;
    shared_tokens += tokens;
    // Query rows as the kernel computes them: per member tile, whole row tiles of the kernel.
    const int64_t rt = std::max(1, shape.task_row_tile);
    for (int32_t m = 0; m < n.count; m += tile) {
      const int32_t rows = std::min(tile, n.count - m) * shape.group;
      const double f = 4.0 * shape.head_dim * tokens * (double)((rows + rt - 1) / rt * rt) * shape.num_kv_heads;
      e.flops += f;
      if (rows > kBesideMinRows) e.wide_flops += f;
    }
  }
  for (int32_t b = 0; b < batch; b++) {
    total_tokens += seq_lens[b];
    const int32_t own_from = s.deepest[b] < 0 ? 0 : s.nodes[s.deepest[b]].c1;
    own_tokens += seq_lens[b] - (double)own_from * shape.page_size;
  }
  e.unique = (shared_tokens + own_tokens) * token_bytes;
  e.own = own_tokens * token_bytes;
  e.repeats = (total_tokens - shared_tokens - own_tokens) * token_bytes;
  return e;
}

// AUTO: whether the emitted nodes (estimated as e) make the layer faster, by the cost model above.
bool pays(const ShPlanShape &shape, const Estimate &e) {
  const double unshared_us = (e.unique + kRepeatCost * e.repeats) / kStreamBytesPerUs;
  const double shared_us = e.unique / kStreamBytesPerUs + e.flops / shape.task_flops_per_us + kSectionFixedUs;
  return shared_us <= kAutoMaxTimeRatio * unshared_us;
}

// The task blocks the splits are cut for: all of shape.wave, or a share of it where the decode kernel
// runs beside the tasks and their work is mostly tensor-bound (kBesideBase).
int64_t task_wave(const ShPlanShape &shape, const Estimate &e) {
  const int64_t wave = std::max<int32_t>(1, shape.wave);
  if (!shape.decode_beside) return wave;
  if (e.wide_flops < 0.5 * e.flops) return wave;
  const double tensor_us = e.flops / shape.task_flops_per_us, own_us = e.own / kStreamBytesPerUs;
  const double share = kBesideBase + kBesideSlope * tensor_us / std::max(1e-9, tensor_us + own_us);
  return share > kBesideMaxShare ? wave : std::max<int64_t>(1, std::llround((double)wave * share));
}

}  // namespace

void plan_shared(const ShPlanShape &shape, int32_t batch, const int32_t *rows, const int32_t *seq_lens,
                 const int32_t *table, int64_t table_stride, ShPlan &plan) {
  static thread_local Scratch s;
  plan.tasks.clear();
  plan.members.clear();
  plan.combines.clear();
  plan.first_column.assign(batch, 0);
  plan.num_slots = 0;
  plan.shared_rows = 0;
  int64_t total = 0;
  for (int32_t b = 0; b < batch; b++) total += seq_lens[b];
  const int64_t token_bytes = shape.token_bytes * shape.num_kv_heads;
  plan.unique_kv_bytes = total * token_bytes;
  if (shape.mode == PKV_SHARED_OFF || shape.group < 1 || shape.group > kShTileRows || batch < 2 || shape.page_size < 1)
    return;

  // Only whole pages are shared, and each row keeps at least one own token.
  s.usable.resize(batch);
  std::vector<int32_t> &usable = s.usable;
  const int32_t ps = shape.page_size;
  if ((ps & (ps - 1)) == 0) {  // the engine's page sizes: a shift, not a division per row
    const int shift = __builtin_ctz((unsigned)ps);
    for (int32_t b = 0; b < batch; b++) usable[b] = (seq_lens[b] - 1) >> shift;
  } else {
    for (int32_t b = 0; b < batch; b++) usable[b] = (seq_lens[b] - 1) / ps;
  }
  s.nodes.clear();
  s.node_rows.clear();
  {
    static thread_local Detector detector{};
    detector.table = table, detector.stride = table_stride, detector.rows = rows, detector.usable = usable.data();
    detector.s = &s;
    detector.detect(batch);
  }
  if (s.nodes.empty()) return;

  int32_t max_depth = 0;
  for (const Node &n : s.nodes) max_depth = std::max(max_depth, n.depth);
  choose_nodes(shape, s, max_depth);
  const bool automatic = shape.mode == PKV_SHARED_AUTO;
  const Estimate first = estimate(shape, s, batch, seq_lens);
  if (automatic && !pays(shape, first)) return;
  const int64_t wave = task_wave(shape, first);
  // Fit the capacities: coarser splits first (down to one per node), then drop the deepest nodes.
  for (int32_t coarsen = 0;; coarsen++) {
    choose_splits(shape, s, wave, coarsen);
    find_deepest(s, batch);
    const Counts c = count(shape, s, batch);
    if (c.tasks <= shape.max_tasks && c.members <= shape.max_members && c.slots <= shape.max_slots) break;
    bool all_single = true;
    for (const Node &n : s.nodes) all_single &= !n.emitted || n.splits == 1;
    if (!all_single) continue;
    if (max_depth == 0) {
      for (Node &n : s.nodes) n.emitted = false;
      break;
    }
    choose_nodes(shape, s, --max_depth);
    coarsen = -1;
  }
  if (automatic && !pays(shape, estimate(shape, s, batch, seq_lens))) return;  // the capacities took nodes away
  find_deepest(s, batch);

  // Rows: slots and first columns.
  s.slot_base.assign(batch, -1);
  for (int32_t b = 0; b < batch; b++) {
    if (s.deepest[b] < 0) continue;
    const Node &n = s.nodes[s.deepest[b]];
    const int32_t pieces = n.piece0 + n.splits;
    s.slot_base[b] = plan.num_slots;
    plan.combines.push_back(ShCombine{b, plan.num_slots, pieces, 0});
    plan.num_slots += pieces * shape.num_kv_heads;
    plan.first_column[b] = n.c1;
    plan.shared_rows++;
  }
  if (plan.shared_rows == 0) return;

  // Members (one list per node; a task's tile is a range of it) and the tasks, longest first with the
  // member tiles of one (split, head) adjacent.
  std::vector<int32_t> &member_first = s.member_first;
  member_first.assign(s.nodes.size(), -1);
  int64_t unique_tokens = 0;
  s.order.clear();
  for (size_t i = 0; i < s.nodes.size(); i++) {
    const Node &n = s.nodes[i];
    if (!n.emitted) continue;
    member_first[i] = (int32_t)plan.members.size();
    for (int32_t k = 0; k < n.count; k++) {
      const int32_t b = s.node_rows[n.first + k];
      plan.members.push_back(ShMember{b, s.slot_base[b]});
    }
    const int64_t tokens = (int64_t)(n.c1 - n.c0) * shape.page_size;
    unique_tokens += tokens;
    for (int32_t sp = 0; sp < n.splits; sp++) {
      const int64_t a = (int64_t)sp * n.step, z = std::min<int64_t>(tokens, a + n.step);
      for (int32_t h = 0; h < shape.num_kv_heads; h++)
        s.order.push_back(Scratch::Order{(int32_t)(z - a), (int32_t)i, sp, h});
    }
  }
  std::stable_sort(s.order.begin(), s.order.end(),
                   [](const Scratch::Order &x, const Scratch::Order &y) { return x.len > y.len; });
  const int32_t tile = sh_tile_members(shape.group);
  for (const Scratch::Order &o : s.order) {
    const Node &n = s.nodes[o.node];
    const int32_t begin = (int32_t)((int64_t)n.c0 * shape.page_size + (int64_t)o.split * n.step);
    const int32_t end = begin + o.len;
    for (int32_t m = 0; m < n.count; m += tile)
      plan.tasks.push_back(ShTask{o.head, rows[s.node_rows[n.first]], begin, end, member_first[o.node] + m,
                                  std::min(tile, n.count - m), n.piece0 + o.split, 0});
  }
  for (int32_t b = 0; b < batch; b++) unique_tokens += seq_lens[b] - (int64_t)plan.first_column[b] * shape.page_size;
  plan.unique_kv_bytes = unique_tokens * token_bytes;
}

int64_t sh_plan_bytes(const ShPlan &plan) {
  return sh_image_bytes((int64_t)plan.tasks.size(), (int64_t)plan.members.size(), (int64_t)plan.combines.size());
}

void write_sh_image(const ShPlan &plan, void *image) {
  ShHeader &h = *static_cast<ShHeader *>(image);
  h = ShHeader{(int32_t)plan.tasks.size(), (int32_t)plan.members.size(), (int32_t)plan.combines.size(), plan.num_slots};
  char *at = static_cast<char *>(image) + sizeof(ShHeader);
  if (!plan.tasks.empty()) memcpy(at, plan.tasks.data(), plan.tasks.size() * sizeof(ShTask));
  at += plan.tasks.size() * sizeof(ShTask);
  const int64_t member_bytes = sh_members_bytes((int64_t)plan.members.size());
  memset(at, 0, member_bytes);
  if (!plan.members.empty()) memcpy(at, plan.members.data(), plan.members.size() * sizeof(ShMember));
  at += member_bytes;
  if (!plan.combines.empty()) memcpy(at, plan.combines.data(), plan.combines.size() * sizeof(ShCombine));
}

}  // namespace pkv
