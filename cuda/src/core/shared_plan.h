// The shared-prefix planner: finds the page runs that rows of a decode step hold in common (a tree of
// nodes, shared_image.h), decides whether reading them once pays, and cuts them into tasks.
#pragma once
#include <cstdint>
#include <vector>

#include "shared_image.h"

namespace pkv {

// PKV_SHARED_* of pkv_engine_settings::shared_prefix.
struct ShPlanShape {
  int32_t num_kv_heads;
  int32_t group;             // query heads per KV head (at most kShTileRows)
  int32_t page_size;
  int32_t head_dim;
  int64_t token_bytes;       // K and V bytes of one token of one KV head (one layer)
  int32_t wave;              // shared-task blocks resident at once
  int32_t mode;              // PKV_SHARED_AUTO, _OFF or _ALWAYS
  // Capacities of the engine's fixed buffers: a plan that would need more shares less (fewer splits,
  // then fewer nodes) and never overflows them.
  int32_t max_tasks;
  int32_t max_members;
  int32_t max_slots;
  // The task kernel as AUTO's cost model sees it: its tensor-core rate (FLOPs per microsecond, measured
  // on the H200) and the query rows it computes a member tile in (mma tiles of 16; the warpgroup kernel's
  // 64).
  double task_flops_per_us = 190e6;
  int32_t task_row_tile = 16;
  // The step's decode kernel starts on the SMs the task blocks leave free (programmatic launch): tasks
  // of tensor-bound work may then be cut for fewer blocks than `wave`.
  bool decode_beside = false;
};

// One step's section before it is written out; vectors keep their capacity from step to step.
struct ShPlan {
  std::vector<ShTask> tasks;
  std::vector<ShMember> members;
  std::vector<ShCombine> combines;
  std::vector<int32_t> first_column;  // per decode row: where its own tokens start (0: it shares nothing)
  int32_t num_slots = 0;
  int64_t unique_kv_bytes = 0;        // bytes of the distinct K/V the step reads with this section (one layer)
  int32_t shared_rows = 0;            // rows with at least one shared piece
};

// Plans the section for decode rows 0 .. batch - 1 (block-table rows `rows`, lengths `seq_lens`, the
// pool's host table with `table_stride` columns). Leaves `plan` empty (no tasks, first_column all 0)
// where sharing does not pay or the shape cannot share. Cost: O(batch) when no two rows begin with the
// same page, else O(rows x shared columns).
void plan_shared(const ShPlanShape &shape, int32_t batch, const int32_t *rows, const int32_t *seq_lens,
                 const int32_t *table, int64_t table_stride, ShPlan &plan);
// Bytes of the written section, and the writer (into `image`, which has that room).
int64_t sh_plan_bytes(const ShPlan &plan);
void write_sh_image(const ShPlan &plan, void *image);

}  // namespace pkv
