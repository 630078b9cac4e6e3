// The plan image: one step's workqueue as the planner writes it and the kernels and the CPU executor
// read it. This header is its only definition: the layout, the accessors, what a claiming task's fields
// mean, and the split/merge bookkeeping every executor follows. It compiles for the host and the device.
//
// The image is plain int4-sized structs, so one async copy moves the whole plan and the kernels read it
// without conversion:
//   [PlanHeader][PlanRow x batch][PlanTask x num_tasks][PlanDelta x num_deltas]
// (rows are two int4, the other records one)
// in one contiguous block: the host stages it in pinned memory and copies the used prefix once per step.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define PKV_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define PKV_HOST_DEVICE inline
#endif

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

// A row's tokens are those of its block-table row from column first_column on: 0, unless the step's
// shared-prefix section (shared_image.h) reads the columns before it for this row and others.
// A row asks q_count queries (a decode row one; a speculative row its draft tokens, q_count x group <= 16):
// its newest q_count tokens, q and out rows q_first .. q_first + q_count - 1, each seeing the context up
// to its own position (causal).
struct PlanRow {
  int32_t table_row;     // block-table row of the sequence
  int32_t seq_len;       // tokens from first_column on (>= 1): the row's own context
  int32_t num_splits;    // 1: tasks write `out` directly; more: partials merged by the last finisher
  int32_t partial_base;  // first partial slot (partial_slot)
  int32_t first_column;  // block-table column of the row's token 0
  int32_t q_count;       // query tokens, >= 1
  int32_t q_first;       // the first one's row in q and out
  int32_t reserved;
};

// A task's tokens. Static (claim_tile 0, or a row of one split): [tok_begin, tok_end), page-aligned.
// Claiming (claim_tile > 0 and a row of several splits; docs/kernels.md, "Claiming"): the splits of
// one (row, head) share its tiles of claim_tile tokens. A split first takes its own tiles from tok_begin
// up to kClaimFirstTiles of them or tok_end (the start of the shared part, the same for every split of
// the row; a split with tok_begin == tok_end has none), then claims tiles of [tok_end, seq_len) one at a
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

static_assert(sizeof(PlanRow) == 32 && sizeof(PlanTask) == 16 && sizeof(PlanDelta) == 16, "int4-sized");

// ---- layout ------------------------------------------------------------------------------------

// Byte size of a plan image with room for `batch` rows, `tasks` tasks and `deltas` deltas.
PKV_HOST_DEVICE int64_t plan_image_bytes(int32_t batch, int64_t tasks, int64_t deltas) {
  return (int64_t)sizeof(PlanHeader) + 32 * (int64_t)batch + 16 * (tasks + deltas);
}
// Tasks start right after the rows.
PKV_HOST_DEVICE int32_t plan_tasks_offset(int32_t batch) { return (int32_t)((sizeof(PlanHeader) + 32 * (int64_t)batch) / 16); }
// The block-table entries of a row's tokens: entry i holds the page of tokens [i, i + 1) x page_size.
PKV_HOST_DEVICE const int32_t *row_table(const int32_t *table, int64_t table_stride, const PlanRow &row) {
  return table + (int64_t)row.table_row * table_stride + row.first_column;
}

PKV_HOST_DEVICE const PlanHeader &plan_header(const void *image) { return *static_cast<const PlanHeader *>(image); }
PKV_HOST_DEVICE PlanHeader &plan_header(void *image) { return *static_cast<PlanHeader *>(image); }
PKV_HOST_DEVICE const PlanRow *plan_rows(const void *image) {
  return reinterpret_cast<const PlanRow *>(static_cast<const char *>(image) + sizeof(PlanHeader));
}
PKV_HOST_DEVICE PlanRow *plan_rows(void *image) {
  return reinterpret_cast<PlanRow *>(static_cast<char *>(image) + sizeof(PlanHeader));
}
PKV_HOST_DEVICE const PlanTask *plan_tasks(const void *image) {
  return reinterpret_cast<const PlanTask *>(static_cast<const char *>(image) + 16 * (int64_t)plan_header(image).tasks_offset);
}
PKV_HOST_DEVICE PlanTask *plan_tasks(void *image) {
  return reinterpret_cast<PlanTask *>(static_cast<char *>(image) + 16 * (int64_t)plan_header(image).tasks_offset);
}
PKV_HOST_DEVICE PlanDelta *plan_deltas(void *image) {
  return reinterpret_cast<PlanDelta *>(static_cast<char *>(image) + 16 * (int64_t)plan_header(image).deltas_offset);
}

PKV_HOST_DEVICE int32_t task_head(const PlanTask &t) { return t.head_split >> 16; }
PKV_HOST_DEVICE int32_t task_split(const PlanTask &t) { return t.head_split & 0xffff; }

// ---- query rows --------------------------------------------------------------------------------
// A task computes its row's q_count x group query rows against each K/V tile: local row r is query
// token r / group of the row and query head r % group of the task's KV head group.

PKV_HOST_DEVICE int32_t row_query_rows(const PlanRow &row, int32_t group) { return row.q_count * group; }
// The q (and out, lse) row of local row r: [token][Hq] with Hq = num_kv_heads x group.
PKV_HOST_DEVICE int64_t row_qo(const PlanRow &row, int32_t num_kv_heads, int32_t group, int32_t head, int32_t r) {
  const int32_t t = row.q_count == 1 ? 0 : r / group;
  return ((int64_t)(row.q_first + t) * num_kv_heads + head) * group + (r - t * group);
}
// Tokens that local row r sees, of the row's seq_len: all but the queries after its own.
PKV_HOST_DEVICE int32_t row_visible(const PlanRow &row, int32_t group, int32_t r) {
  return row.seq_len - row.q_count + 1 + (row.q_count == 1 ? 0 : r / group);
}

// ---- claiming ----------------------------------------------------------------------------------

// Whether a task of `row` claims tiles (else its range is static).
PKV_HOST_DEVICE bool task_claims(int32_t claim_tile, const PlanRow &row) { return claim_tile != 0 && row.num_splits != 1; }

// A claiming split's tiles of `tile` tokens (the plan's claim_tile): its own ones, own_first ..
// own_first + own_count - 1, then claims of the shared part from shared_first on; ntiles is the row's.
struct ClaimTiles {
  int32_t own_first, own_count, ntiles, shared_first;
};
PKV_HOST_DEVICE ClaimTiles claim_tiles(const PlanTask &t, const PlanRow &row, int32_t tile) {
  const int32_t ntiles = (row.seq_len + tile - 1) / tile, first = t.tok_begin / tile, shared = t.tok_end / tile;
  const int32_t own_end = shared < ntiles ? shared : ntiles, own = own_end - first > 0 ? own_end - first : 0;
  return {first, own < kClaimFirstTiles ? own : kClaimFirstTiles, ntiles, shared};
}

// ---- split bookkeeping -------------------------------------------------------------------------
// Partial slots hold `group` rows of head_dim fp32 (normalised output) and their lse; a split of a row
// of q_count queries takes q_count consecutive slots (its q_count x group rows), so the splits of one
// (row, head) are contiguous rows from partial_slot(row, head) x group on.
// A row of several splits writes one fp32 partial per split (split s at rows s x row_query_rows on; a
// claiming row's splits take slots in the order they finish, from a per-(row, head) slot counter, and a
// split that computed no tile takes none). Each finishing split adds merge_count_add to its (row, head)'s
// 64-bit counter: splits counted in the high word, work done (splits, or a claiming row's tiles) in the
// low word. The one whose add completes the work learns from the sum how many slots to merge.

PKV_HOST_DEVICE int64_t partial_slot(const PlanRow &row, int32_t head) {
  return (int64_t)row.partial_base + (int64_t)head * row.num_splits * row.q_count;  // this head's first partial slot
}
// claimed: tiles this task computed if its row claims, else -1.
PKV_HOST_DEVICE unsigned long long merge_count_add(int32_t claimed) {
  return (1ull << 32) + (unsigned)(claimed > 0 ? claimed : 1);
}
// The counter's two words: work done (compare with the row's: its tiles when it claims, else its
// splits) and splits counted (the slots to merge once the work is complete).
PKV_HOST_DEVICE int32_t merge_work_done(unsigned long long counter) { return (int32_t)(counter & 0xffffffffu); }
PKV_HOST_DEVICE int32_t merge_splits_counted(unsigned long long counter) { return (int32_t)(counter >> 32); }

}  // namespace pkv
