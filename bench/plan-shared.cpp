// Host cost of the shared-prefix planner alone (plan_shared, cuda/src/core/plan/shared_prefix.cpp) at
// B8, B64 and B256: rows that share nothing (the common step: one hash-table pass over first pages), every row
// behind one 16K-token prefix, and a tree (groups of 8 forks behind 4K-token prompts, half of them
// forked again 1K tokens later). 8 KV heads, group 4, page size 16, 8K private tokens per row at most.
//   c++ -O2 -std=c++17 -Icuda/include -Icuda/src/cpu_only bench/plan-shared.cpp cuda/src/core/plan/shared_prefix.cpp -o /tmp/plan-shared
//   /tmp/plan-shared [plans per case]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../cuda/src/core/shared_plan.h"
#include "persistentkv.h"

namespace {

constexpr int32_t kPage = 16, kWidth = 2048;  // 32K tokens per row at most

struct Step {
  std::vector<int32_t> table, rows, lens;
};

// kind 0: nothing shared; 1: one 16K prefix; 2: a tree.
Step make_step(int32_t batch, int kind) {
  Step s;
  s.table.assign((size_t)batch * kWidth, 0);
  int32_t next = 0;
  for (int32_t b = 0; b < batch; b++) {
    int32_t *row = s.table.data() + (int64_t)b * kWidth;
    int32_t c = 0;
    if (kind == 1) {
      for (; c < 1024; c++) row[c] = c;  // pages 0..1023: the shared prefix
    } else if (kind == 2) {
      const int32_t group = b / 8, sub = (b % 8) / 4;
      for (; c < 256; c++) row[c] = 1000000 + group * 4096 + c;                 // the group's prompt
      if (b % 2 == 0)
        for (; c < 320; c++) row[c] = 2000000 + (group * 2 + sub) * 4096 + c;  // a fork's continuation
    }
    const int32_t own = 1 + (b * 7919) % 512;  // private pages
    for (int32_t i = 0; i < own; i++) row[c++] = 10000 + next++;
    s.rows.push_back(b);
    s.lens.push_back(c * kPage - (b % kPage));
  }
  return s;
}

}  // namespace

int main(int argc, char **argv) {
  const int plans = argc > 1 ? atoi(argv[1]) : 2000;
  const char *names[] = {"no sharing", "one 16K prefix", "tree of forks"};
  printf("plan_shared host cost, median of %d plans (8 KV heads, group 4, page 16, wave 264)\n", plans);
  for (int32_t batch : {8, 64, 256})
    for (int kind = 0; kind < 3; kind++) {
      const Step step = make_step(batch, kind);
      pkv::ShPlanShape shape{8, 4, kPage, 128, 512, 264, PKV_SHARED_ALWAYS, 1 << 20, 1 << 20, 1 << 20};
      pkv::ShPlan plan;
      std::vector<double> us;
      for (int i = 0; i < plans; i++) {
        const auto t0 = std::chrono::steady_clock::now();
        pkv::plan_shared(shape, batch, step.rows.data(), step.lens.data(), step.table.data(), kWidth, plan);
        const auto t1 = std::chrono::steady_clock::now();
        us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
      }
      std::nth_element(us.begin(), us.begin() + us.size() / 2, us.end());
      printf("  B%-4d %-15s %8.2f us  (%zu tasks, %d shared rows)\n", batch, names[kind], us[us.size() / 2],
             plan.tasks.size(), plan.shared_rows);
    }
  return 0;
}
