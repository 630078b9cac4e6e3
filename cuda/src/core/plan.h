// The decode plan: the compact workqueue of one step, built on the host and shared by every layer.
//
// A task is (batch row, KV head, token range). Its layout is plain int4-sized structs so that one async
// copy moves the whole plan and the kernels read it without conversion. The plan image is
//   [PlanHeader][PlanRow x batch][PlanTask x num_tasks][PlanDelta x num_deltas]
// in one contiguous block: the host stages it in pinned memory and copies the used prefix once per step.
#pragma once
#include <cstdint>

namespace pkv {

struct PlanHeader {
  int32_t batch;
  int32_t num_tasks;
  int32_t num_deltas;
  int32_t tasks_offset;   // in 16-byte units from the plan's start
  int32_t deltas_offset;  // in 16-byte units
  int32_t num_partials;   // fp32 partial slots the split tasks use
  int32_t claim_tile;     // tokens per claimed tile; 0: every task's range is static (see PlanTask)
  int32_t reserved;
};
static_assert(sizeof(PlanHeader) == 32, "header is two int4");

struct PlanRow {
  int32_t table_row;     // block-table row of the sequence
  int32_t seq_len;       // context length in tokens (>= 1)
  int32_t num_splits;    // 1: tasks write `out` directly; more: partials merged by the last finisher
  int32_t partial_base;  // first partial slot: base + head * num_splits + split
};

// A task's tokens. Static (claim_tile 0, or a row of one split): [tok_begin, tok_end), page-aligned.
// Claiming (claim_tile > 0 and a row of several splits; v8, bench/NOTES-kernels.md): the splits of one
// (row, head) share its tiles of claim_tile tokens. A split first takes its own tiles from tok_begin up to
// kClaimFirstTiles of them or tok_end (the start of the shared part, the same for every split of the
// row; a split with tok_begin == tok_end has none), then claims tiles of [tok_end, seq_len) one at a
// time from the pair's cursor, so the splits finish together however memory favours them.
struct PlanTask {
  int32_t row;         // index into the batch (not the block-table row)
  int32_t head_split;  // kv_head << 16 | split index
  int32_t tok_begin;
  int32_t tok_end;
};
// Tiles a claiming split takes before it claims: the kernels' pipeline depth plus one, so a split's
// first claim is made while its own tiles stream, never before its first copy.
constexpr int32_t kClaimFirstTiles = 4;

// One block-table entry to copy into the device table before the step runs.
struct PlanDelta {
  int32_t table_row;
  int32_t column;
  int32_t page;
  int32_t reserved;
};

static_assert(sizeof(PlanRow) == 16 && sizeof(PlanTask) == 16 && sizeof(PlanDelta) == 16, "int4-sized");

inline int32_t task_head(const PlanTask &t) { return t.head_split >> 16; }
inline int32_t task_split(const PlanTask &t) { return t.head_split & 0xffff; }

// What the planner needs to know about the engine and the machine.
struct PlanShape {
  int32_t num_kv_heads;
  int32_t page_size;
  int32_t wave;               // blocks resident at once (multiprocessors x blocks per SM)
  int32_t max_partials;       // capacity of the partial buffers
  int32_t min_split_tokens;   // persistent: no split shorter than this (merge traffic ~ 8/L of KV)
  int32_t tile_tokens;        // tokens per pipeline stage: persistent splits are rounded up to whole tiles
  // The dynamic tail (v7, bench/NOTES-kernels.md; the engine sets 10 and 2), all 0 = the planner before v7:
  int32_t tail_pct;           // persistent, few rows, large step: this % of the work as a dynamic tail pool
  int32_t tail_pieces;        // tail pool tasks per block (1..3; 0 = 3)
  int32_t tail_all;           // 1: the tail split on small steps too (to exercise it in the sweep/sanitizer)
  int32_t tail_end;           // > 0 (v9): the tail's pieces shrink to this many tiles; 0: tail_pieces even pieces
  int32_t per_block;          // 1..4: force that many tasks per block (no single-wave choice) when rows are few
  // Claiming (v8; the engine sets 8): persistent, few rows, at least this many tiles per block: the splits
  // of each (row, head) claim its tiles (PlanTask). 0: off.
  int32_t claim_min_tiles;
  int32_t claim_large;  // 1: claiming on the tail's steps too (a measurement setting)
};

// Upper bound of tasks (and partial slots) any plan of `batch` rows can produce: at most four tasks
// per block of one wave plus one remainder split per (row, head).
inline int64_t max_plan_tasks(const PlanShape &s, int32_t batch) {
  return 4 * (int64_t)s.wave + (int64_t)batch * s.num_kv_heads * 2;
}

// Byte size of a plan image with room for `batch` rows, `tasks` tasks and `deltas` deltas.
inline int64_t plan_image_bytes(int32_t batch, int64_t tasks, int64_t deltas) {
  return (int64_t)sizeof(PlanHeader) + 16 * ((int64_t)batch + tasks + deltas);
}

// Fills rows and tasks of the image at `image` (which must have room per plan_image_bytes) from the
// batch's lengths; `kernel` is PKV_KERNEL_*. Deltas are appended by the engine afterwards.
// Returns the number of splits of the longest-split row.
int32_t build_workqueue(const PlanShape &shape, int32_t kernel, int32_t batch, const int32_t *table_rows,
                        const int32_t *seq_lens, void *image);

inline PlanRow *plan_rows(void *image) {
  return reinterpret_cast<PlanRow *>(static_cast<char *>(image) + sizeof(PlanHeader));
}
inline PlanTask *plan_tasks(void *image) {
  auto *h = static_cast<PlanHeader *>(image);
  return reinterpret_cast<PlanTask *>(static_cast<char *>(image) + 16 * (int64_t)h->tasks_offset);
}
inline PlanDelta *plan_deltas(void *image) {
  auto *h = static_cast<PlanHeader *>(image);
  return reinterpret_cast<PlanDelta *>(static_cast<char *>(image) + 16 * (int64_t)h->deltas_offset);
}

}  // namespace pkv
