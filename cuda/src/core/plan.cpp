// The planner: one step's workqueue, built on the host into pinned staging memory (the engine copies
// the image with one async copy). A short chooser over the strategies in plan/, one file each.
#include "plan.h"

#include "persistentkv.h"
#include "plan/plan_builder.h"

namespace pkv {

int32_t build_workqueue(const PlanShape &s, const PlanSettings &settings, int32_t kernel, int32_t batch,
                        const int32_t *table_rows, const int32_t *seq_lens, const int32_t *first_columns,
                        PlanQueries queries, void *image) {
  PlanHeader &header = plan_header(image);
  header.batch = batch;
  header.tasks_offset = plan_tasks_offset(batch);
  PlanTask *tasks = plan_tasks(image);
  PlanBuilder p{s, settings, batch, table_rows, seq_lens, first_columns, queries, plan_rows(image), tasks};

  int64_t max_pages = 0, total_pages = 0;
  for (int32_t b = 0; b < batch; b++) {
    int64_t pages = ((int64_t)seq_lens[b] + s.page_size - 1) >> __builtin_ctz((unsigned)s.page_size);
    max_pages = std::max(max_pages, pages);
    total_pages += pages;
  }
  const int64_t min_pages = std::max<int64_t>(1, ceil_div(s.min_split_tokens, s.page_size));
  const bool few_rows = (int64_t)batch * s.num_kv_heads <= s.wave;
  const int64_t work = total_pages * s.num_kv_heads;  // (page, head) pairs
  if (kernel == PKV_KERNEL_BASELINE) {
    plan_baseline_chunks(p, max_pages);
  } else if (few_rows && settings.tail_percent > 0 && work >= settings.tail_min_splits * min_pages * s.wave) {
    plan_dynamic_tail(p, total_pages);
  } else if (few_rows && settings.claim_min_tiles > 0 &&
             (total_pages * s.page_size / s.tile_tokens) * s.num_kv_heads >= (int64_t)settings.claim_min_tiles * s.wave) {
    // Medium steps (under the tail's size): claiming.
    plan_claiming(p);
  } else {
    plan_balanced_waves(p, total_pages, max_pages);
  }
  header.num_tasks = (int32_t)(p.out - tasks);
  header.num_partials = p.num_partials;
  header.claim_tile = p.claim_tile;
  header.num_deltas = 0;
  header.deltas_offset = header.tasks_offset + header.num_tasks;
  header.reserved = 0;
  return p.max_splits;
}

}  // namespace pkv
