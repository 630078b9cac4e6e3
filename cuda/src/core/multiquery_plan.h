// The multi-query planner: tiles of the query tokens of each row of q_len > 1, cut into splits where the
// step has too few tiles to fill the GPU (multiquery_image.h describes what it writes). Rows of more
// than wide_above query rows (long chunks, large drafts at large groups) take wide tiles where the
// shape allows them (wide_wave > 0).
#pragma once
#include <cstdint>
#include <vector>

#include "multiquery_image.h"

namespace pkv {

struct MqPlanShape {
  int32_t num_kv_heads;
  int32_t group;
  int32_t wave;              // narrow-task blocks resident at once
  int32_t min_split_tokens;  // no split shorter (each split costs a partial write and read)
  int32_t wide_wave;         // wide-task blocks resident at once (the persistent launch's grid); 0: no wide tiles
  // Rows of more query rows (q_len x group) than this take wide tiles. At 16 (drafts of 8 and 16 tokens
  // at group 4 wide) every such step of bench/multiquery.ts ran 1.03-1.8x faster than on narrow tiles in
  // one H200 round; at 8 (4 tokens) steps of a few long rows and of many short ones ran up to 1.22x
  // slower, those of B32-B128 mixed rows up to 1.29x faster.
  int32_t wide_above = 16;
};

// One step's section before it is written out; vectors keep their capacity from step to step.
struct MqPlan {
  std::vector<MqRow> rows;             // the caller fills these
  std::vector<MqTask> tasks;           // plan_multiquery fills the rest
  std::vector<MqMerge> merges;
  int32_t num_wide = 0;                // tasks 0 .. num_wide - 1: wide tiles, ordered for a grid of wide_grid
  int32_t wide_grid = 0;
  int32_t num_slots = 0;
  int64_t pairs = 0;                   // (query token, visible context token) pairs: FLOPs = 4 x pairs x Hq x d
};

void plan_multiquery(const MqPlanShape &shape, MqPlan &plan);
// Bytes of the written section, and the writer (into `image`, which has that room).
int64_t mq_plan_bytes(const MqPlan &plan);
void write_mq_image(const MqPlan &plan, void *image);

}  // namespace pkv
