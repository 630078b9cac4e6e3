// Host cost of pkv_decode_plan alone, from C++ (no FFI, no bindings): the batches and lengths of
// bench/micro.ts (8 KV heads, head dim 128, page size 16, 32 query heads, adaptive policy), medians of
// many plans each, and the same plans with 1 row in 16 starting a page (a decode step's deltas).
// Also a fixed number of plans for callgrind, whose instruction counts repeat on a noisy machine.
//   c++ -O2 -std=c++17 -Icuda/include bench/plan-host.cpp -Lzig-out/lib -lpersistentkv -Wl,-rpath,$PWD/zig-out/lib \
//       -o /tmp/plan-host
//   /tmp/plan-host [cpu|cuda] [plans per batch (default 20000)] [one batch (default 1, 8, 64, 256, 1024)]
//   valgrind --tool=callgrind /tmp/plan-host cpu 1000 256 (then callgrind_annotate)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "persistentkv.h"

namespace {

void check(pkv_status s, const char *what) {
  if (s == PKV_OK) return;
  fprintf(stderr, "%s failed: %s\n", what, pkv_last_error());
  exit(1);
}

int32_t length_of(int32_t i) { return 64 + (i * 7919) % 1984; }  // 64..2047 tokens, as bench/micro.ts

}  // namespace

int main(int argc, char **argv) {
  const bool cuda = argc > 1 && strcmp(argv[1], "cuda") == 0;
  const int plans = argc > 2 ? atoi(argv[2]) : 20000;
  const int32_t max_batch = 1024, width = 256, page = 16;
  pkv_runtime *rt = nullptr;
  check(pkv_runtime_create(cuda ? PKV_BACKEND_CUDA : PKV_BACKEND_CPU, 0, &rt), "pkv_runtime_create");
  pkv_kv_config kc{1, max_batch * 160, page, 8, 128, PKV_DTYPE_F16, max_batch, width, 0, 0};
  pkv_kvpool *pool = nullptr;
  check(pkv_kvpool_create(rt, &kc, &pool), "pkv_kvpool_create");
  uint64_t table_at = 0, dirty_at = 0;
  check(pkv_kvpool_table_addresses(pool, &table_at, &dirty_at), "pkv_kvpool_table_addresses");
  int32_t *table = reinterpret_cast<int32_t *>(table_at), *dirty = reinterpret_cast<int32_t *>(dirty_at);
  // Row r holds pages r * 160 ..: every column a plan may read is valid.
  for (int32_t r = 0; r < max_batch; r++) {
    for (int32_t c = 0; c < 160; c++) table[(int64_t)r * width + c] = r * 160 + c;
    dirty[r] = 0;
  }
  pkv_decode_config dc{32, 8, 128, page, PKV_DTYPE_F16, PKV_POLICY_ADAPTIVE, max_batch, 0.f};
  pkv_decode_engine *engine = nullptr;
  check(pkv_decode_engine_create(rt, &dc, &engine), "pkv_decode_engine_create");

  std::vector<int32_t> rows(max_batch), lens(max_batch);
  for (int32_t i = 0; i < max_batch; i++) rows[i] = i, lens[i] = length_of(i);
  pkv_plan_info info;
  printf("backend %s, %d plans per batch; median us (and with 1 row in 16 adding a page)\n", cuda ? "cuda" : "cpu", plans);
  std::vector<int32_t> batches{1, 8, 64, 256, 1024};
  if (argc > 3) batches = {std::clamp(atoi(argv[3]), 1, max_batch)};
  for (int32_t batch : batches) {
    check(pkv_decode_plan(engine, pool, batch, rows.data(), lens.data(), -1, &info), "pkv_decode_plan");
    std::vector<double> clean, growing;
    std::vector<int32_t> grown(lens.begin(), lens.begin() + batch);
    for (int i = 0; i < plans; i++) {
      if (cuda && i % 64 == 0) pkv_runtime_synchronize(rt);  // the copies never pile up
      auto t0 = std::chrono::steady_clock::now();
      check(pkv_decode_plan(engine, pool, batch, rows.data(), lens.data(), -1, &info), "pkv_decode_plan");
      auto t1 = std::chrono::steady_clock::now();
      clean.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    // A decode step: every row grows by 16 tokens over 16 steps, so 1 row in 16 starts a page per step
    // (lengths wrap back before they pass the table's 160 pages).
    for (int i = 0; i < plans / 4; i++) {
      for (int32_t b = i % 16; b < batch; b += 16) {
        grown[b] += page;
        if (grown[b] > 150 * page) grown[b] = length_of(b);
        dirty[b] = std::min(dirty[b], (grown[b] - 1) / page);
      }
      if (cuda && i % 64 == 0) pkv_runtime_synchronize(rt);
      auto t0 = std::chrono::steady_clock::now();
      check(pkv_decode_plan(engine, pool, batch, rows.data(), grown.data(), -1, &info), "pkv_decode_plan");
      auto t1 = std::chrono::steady_clock::now();
      growing.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    std::sort(clean.begin(), clean.end());
    std::sort(growing.begin(), growing.end());
    printf("B=%-5d %7.3f us  (%7.3f us)  kernel %d, %d tasks\n", batch, clean[clean.size() / 2], growing[growing.size() / 2],
           info.kernel, info.num_tasks);
  }
  check(pkv_runtime_destroy(rt), "pkv_runtime_destroy");
  return 0;
}
