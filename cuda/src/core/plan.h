// The planner's interface: what it needs to know about the engine and the machine (PlanShape), the
// settings that choose among its strategies (PlanSettings, from pkv_engine_settings), and the one call
// that fills a plan image (plan_image.h) for a step.
#pragma once
#include <cstdint>

#include "plan_image.h"

namespace pkv {

struct PlanShape {
  int32_t num_kv_heads;
  int32_t page_size;
  int32_t wave;              // blocks resident at once (multiprocessors x blocks per SM)
  int32_t min_split_tokens;  // persistent: no split shorter than this (merge traffic ~ 8/L of KV)
  int32_t tile_tokens;       // tokens per pipeline stage: persistent splits are rounded up to whole tiles
};

// Which persistent strategy a few-row step gets (pkv_engine_settings documents each field).
struct PlanSettings {
  int32_t tail_percent;     // dynamic tail: this % of a large step's work as small tasks; 0: off
  int32_t tail_min_splits;  // the tail applies at this many minimum splits per block or more
  int32_t tail_end_tiles;   // the tail's pieces shrink to this many tiles; 0: even pieces
  int32_t claim_min_tiles;  // claiming at this many tiles per block or more; 0: off
};

// Upper bound of tasks (and partial slots) any plan of `batch` rows can produce: at most four tasks
// per block of one wave plus one remainder split per (row, head).
inline int64_t max_plan_tasks(const PlanShape &s, int32_t batch) {
  return 4 * (int64_t)s.wave + (int64_t)batch * s.num_kv_heads * 2;
}

// The queries of a step's rows (PlanRow): row b asks counts[b] tokens, from q row firsts[b] on. Null
// arrays: one query each, row b's at q row b.
struct PlanQueries {
  const int32_t *counts = nullptr;
  const int32_t *firsts = nullptr;
};

// Fills the header, rows and tasks of the image at `image` (which must have room per plan_image_bytes
// and max_plan_tasks) from the batch's lengths; `kernel` is PKV_KERNEL_*. A row's tokens start at its
// block-table column first_columns[b] (null: 0 for all; seq_lens counts from there). Deltas are
// appended by the engine afterwards. Returns the number of splits of the longest-split row. Partial
// slots: at most max_plan_tasks x the largest query count.
int32_t build_workqueue(const PlanShape &shape, const PlanSettings &settings, int32_t kernel, int32_t batch,
                        const int32_t *table_rows, const int32_t *seq_lens, const int32_t *first_columns,
                        PlanQueries queries, void *image);

}  // namespace pkv
