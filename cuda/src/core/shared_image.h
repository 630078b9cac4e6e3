// The shared-prefix section of a plan: page runs that several decode rows of one step hold in common
// (forks, prefix-cache hits, trees of both), read once per step for all of those rows. The planner
// writes it (shared_plan.h), the shared kernels and the CPU executor read it. The only definition of
// the layout; compiles for the host and the device.
//
//   [ShHeader][ShTask x num_tasks][ShMember x num_members][ShCombine x num_combines]
//
// A node of the sharing tree is a run of block-table columns [c0, c1) that its rows (two or more) hold
// with the same page ids; a node's rows share every ancestor's columns too, so each row's shared
// columns are one chain of nodes from column 0, and the row's own tokens (at least one, the decode
// plan's rebased row: PlanRow::first_column) start where its deepest node ends.
//
// A task is (node split, KV head, a tile of the node's rows): it computes the tile's member_count x
// group query rows (member i, query head y of the group: local row i * group + y, at most kShTileRows)
// against tokens [kv_begin, kv_end), every one visible (no mask but the range's end), and writes one
// fp32 partial per (member, KV head): the normalised outputs of the group and their log2 lse. Partial
// `piece` of a row is its (piece)-th shared split counted from the root, so a node's pieces are
// numbered the same for all of its rows.
//
// After the decode kernels have written each row's own result (out, and lse in natural log), a combine
// merges every row of ShCombine with its pieces by log-sum-exp and rewrites out and lse.
#pragma once
#include <cstdint>

#include "plan_image.h"

namespace pkv {

constexpr int32_t kShTileRows = 128;  // query rows (members x group) of one task: 4 warps x 32 mma rows (D 256: 2 passes of 64)

struct ShHeader {
  int32_t num_tasks;
  int32_t num_members;
  int32_t num_combines;
  int32_t num_slots;  // partial slots the tasks write
};
struct ShTask {
  int32_t head;          // KV head
  int32_t table_row;     // a member's block-table row (all members hold the same pages on the range)
  int32_t kv_begin;      // context tokens [kv_begin, kv_end), page-aligned begin
  int32_t kv_end;
  int32_t member_first;  // members member_first .. member_first + member_count - 1 of the ShMember array
  int32_t member_count;  // member_count * group <= kShTileRows
  int32_t piece;         // the split's piece index in each member row
  int32_t reserved;
};
struct ShMember {
  int32_t row;        // decode row (index into the batch: q, out and lse row)
  int32_t slot_base;  // the row's first partial slot; piece p of KV head h is slot_base + p * num_kv_heads + h
};
struct ShCombine {
  int32_t row;        // decode row
  int32_t slot_base;  // as ShMember
  int32_t pieces;     // shared pieces to merge with the row's own result
  int32_t reserved;
};
static_assert(sizeof(ShHeader) == 16 && sizeof(ShTask) == 32 && sizeof(ShMember) == 8 && sizeof(ShCombine) == 16,
              "int4-sized records");

// One partial slot: group x head_dim fp32 (normalised outputs), then group fp32 lse (log2; -inf: empty),
// padded to 4 floats so that every slot starts 16-byte aligned (vector loads and stores for any group).
PKV_HOST_DEVICE int64_t sh_slot_floats(int32_t group, int32_t head_dim) {
  return (int64_t)group * head_dim + (group + 3) / 4 * 4;
}

// ShMember records are 8 bytes: the section pads them to 16 so that the combines stay int4-aligned.
PKV_HOST_DEVICE int64_t sh_members_bytes(int64_t members) { return (8 * members + 15) / 16 * 16; }
PKV_HOST_DEVICE int64_t sh_image_bytes(int64_t tasks, int64_t members, int64_t combines) {
  return (int64_t)sizeof(ShHeader) + 32 * tasks + sh_members_bytes(members) + 16 * combines;
}
PKV_HOST_DEVICE const ShHeader &sh_header(const void *image) { return *static_cast<const ShHeader *>(image); }
PKV_HOST_DEVICE const ShTask *sh_tasks(const void *image) {
  return reinterpret_cast<const ShTask *>(static_cast<const char *>(image) + sizeof(ShHeader));
}
PKV_HOST_DEVICE const ShMember *sh_members(const void *image) {
  return reinterpret_cast<const ShMember *>(sh_tasks(image) + sh_header(image).num_tasks);
}
PKV_HOST_DEVICE const ShCombine *sh_combines(const void *image) {
  return reinterpret_cast<const ShCombine *>(reinterpret_cast<const char *>(sh_members(image)) +
                                             sh_members_bytes(sh_header(image).num_members));
}

// Members of one task: as many rows as fill kShTileRows query rows.
PKV_HOST_DEVICE int32_t sh_tile_members(int32_t group) { return kShTileRows / group; }

}  // namespace pkv
