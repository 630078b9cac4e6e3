// The multi-query section of a plan: the rows of q_len > 1, their tasks and the merges of split tasks,
// as the planner writes it and the multi-query kernels and the CPU executor read it. The only
// definition of the layout; compiles for the host and the device.
//
//   [MqHeader][MqRow x num_rows][MqTask x num_tasks][MqMerge x num_merges]
//
// A task is (row, KV head, a tile of the row's query tokens, a range of context tokens): it computes the
// tile's q_count x group query rows (token t of the tile and query head y of the group are local row
// t * group + y) against the range, loading each K/V tile once for all of them. A narrow tile has at
// most kMqTileRows rows (the mma.sync kernel); a wide one, a tile of a long chunk, at most kMqWideRows
// (the warpgroup kernel, on Hopper), and the wide tasks come first. A
// tile whose context is long is cut into several tasks (splits) whose fp32 partials (output, log-sum-exp)
// one merge combines; a split's range never reaches past the tile's last query position (causal).
// The step's other rows (q_len 1, and speculative rows of q_len x group <= 16 where the decode kernels
// take them) are in the decode plan, which addresses their q and out rows itself (PlanRow).
#pragma once
#include <cstdint>

#include "plan_image.h"

namespace pkv {

constexpr int32_t kMqTileRows = 64;    // query rows (tokens x group) of a narrow task: 4 warps x 16 mma rows
constexpr int32_t kMqWideRows = 128;   // of a wide task (a long chunk on warpgroup MMAs): 2 warpgroups x 64
constexpr int32_t kMqKvTile = 64;      // context tokens per pipeline stage; split ranges are multiples of it

struct MqHeader {
  int32_t num_rows;
  int32_t num_tasks;
  int32_t num_merges;
  int32_t num_wide;   // tasks 0 .. num_wide - 1 are wide tiles (up to kMqWideRows rows), the rest narrow
  int32_t wide_grid;  // blocks of the wide tasks' persistent launch: block b runs tasks b, b + wide_grid, ...
  int32_t reserved[3];
};
struct MqRow {
  int32_t table_row;
  int32_t seq_len;
  int32_t q_len;
  int32_t q_offset;  // its first query token in q and out
};
struct MqTask {
  int32_t row;  // index into the MqRow array
  int32_t head;  // KV head
  int32_t q_begin;  // first query token of the tile, 0 .. q_len - 1
  int32_t q_count;  // q_count * group <= kMqTileRows
  int32_t kv_begin;  // context tokens [kv_begin, kv_end)
  int32_t kv_end;
  int32_t slot;  // partial slot; -1: the tile's only task, which writes out and lse itself
  int32_t reserved;
};
// The splits of one tile: their partials in slots slot .. slot + num_splits - 1.
struct MqMerge {
  int32_t task;  // one of the splits (the tile's row and query tokens)
  int32_t num_splits;
  int32_t slot;
  int32_t reserved;
};
static_assert(sizeof(MqHeader) == 32 && sizeof(MqRow) == 16 && sizeof(MqTask) == 32 && sizeof(MqMerge) == 16,
              "int4-sized");

// A partial slot: kMqWideRows rows of head_dim fp32 (normalised output), then kMqWideRows fp32 lse; a
// narrow task's split uses the first kMqTileRows of each.
PKV_HOST_DEVICE int64_t mq_slot_floats(int32_t head_dim) { return (int64_t)kMqWideRows * (head_dim + 1); }
PKV_HOST_DEVICE int64_t mq_slot_lse(int32_t head_dim) { return (int64_t)kMqWideRows * head_dim; }

PKV_HOST_DEVICE int64_t mq_image_bytes(int64_t rows, int64_t tasks, int64_t merges) {
  return (int64_t)sizeof(MqHeader) + 16 * rows + 32 * tasks + 16 * merges;
}
PKV_HOST_DEVICE const MqHeader &mq_header(const void *image) { return *static_cast<const MqHeader *>(image); }
PKV_HOST_DEVICE const MqRow *mq_rows(const void *image) {
  return reinterpret_cast<const MqRow *>(static_cast<const char *>(image) + sizeof(MqHeader));
}
PKV_HOST_DEVICE const MqTask *mq_tasks(const void *image) {
  return reinterpret_cast<const MqTask *>(mq_rows(image) + mq_header(image).num_rows);
}
PKV_HOST_DEVICE const MqMerge *mq_merges(const void *image) {
  return reinterpret_cast<const MqMerge *>(mq_tasks(image) + mq_header(image).num_tasks);
}

// Query tokens of one tile: as many as fill its query rows (kMqTileRows, or kMqWideRows for a wide one).
PKV_HOST_DEVICE int32_t mq_tile_tokens(int32_t group, bool wide = false) { return (wide ? kMqWideRows : kMqTileRows) / group; }
// Context position of a row's query token t: the newest q_len tokens are the queries.
PKV_HOST_DEVICE int32_t mq_position(const MqRow &row, int32_t t) { return row.seq_len - row.q_len + t; }

}  // namespace pkv
