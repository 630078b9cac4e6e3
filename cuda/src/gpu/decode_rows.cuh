// Where a decode task's query rows live, and its split's partial rows. A decode plan's row b asks its
// group's query heads, at q rows b x Hq + head x group + y: the layout every decode launch has read, at
// no cost to it. A plan with rows of several queries (kQueries: speculative rows of q_count x group <= 16,
// and a mixed step's decode rows, read in place) reads each row's PlanRow::q_count and q_first
// (plan_image.h): row_query_rows of them, at row_qo.
#pragma once
#include "../core/plan_image.h"
#include "decode_launch.h"

namespace pkv {

template <bool kQueries>
struct TaskRows {
  // Query rows of the task's (row, KV head).
  static __device__ __forceinline__ int count(const PlanRow &row, int group) {
    if constexpr (kQueries) return row_query_rows(row, group);
    return group;
  }
  // The q (and out, lse) row of local row r of plan row b.
  static __device__ __forceinline__ int64_t qo(const DecodeParams &p, int b, const PlanRow &row, int head, int r) {
    if constexpr (kQueries) return row_qo(row, p.num_kv_heads, p.group, head, r);
    return ((int64_t)b * p.num_kv_heads + head) * p.group + r;
  }
  // The (row, head)'s first partial row: its splits' rows follow, count(row) a split.
  static __device__ __forceinline__ int64_t first_partial(const DecodeParams &p, const PlanRow &row, int head) {
    if constexpr (kQueries) return partial_slot(row, head) * p.group;
    return ((int64_t)row.partial_base + (int64_t)head * row.num_splits) * p.group;
  }
};

}  // namespace pkv
