// Task body on tensor cores (head dim 64 and 128): the row's query rows (its q_count tokens x the
// group's g query heads, at most 16: plan_image.h) are the rows of one 16-row mma tile (rows past them
// are zero and never written), so one warp computes every query of the group for 16 tokens with
// mma.m16n8k16: S = Q K^T, online softmax on the fragments in registers, then O += P V with P reused
// from the S fragments. A row of several queries (speculative decoding, kQueries: decode_rows.cuh) costs
// what a decode row does: the same K/V bytes and MMAs, and a causal mask on the scores. Four warps take
// the tile's 16-token chunks in turn; their states are merged at the end like the CUDA-core body's token
// partitions.
#pragma once
#include "../core/plan_image.h"
#include "decode_launch.h"
#include "decode_merge.cuh"
#include "decode_mma.cuh"
#include "decode_pipeline.cuh"
#include "decode_rows.cuh"
#include "decode_task_cores.cuh"
#include "decode_tile.cuh"

namespace pkv {

// Load: the loader axis (decode_tile.cuh): K and V moved by bulk copies into grouped rows
// (BulkTileLoader), or by cp.async into swizzled rows. kQueries: the plan's rows may ask several queries.
template <typename T, int D, class Load, bool kQueries = false>
struct TensorBody {
  using Smem = T;
  static constexpr int kThreads = 128;
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kTile = decode_tile_tokens(D, PKV_MATH_TENSOR_CORES);
  static constexpr int kChunks = kTile / 16;
  static constexpr int kKSteps = D / 16;  // k-steps of Q K^T
  static constexpr int kNTiles = D / 8;   // n-tiles of O
  using Loader = typename Load::template Loader<T, D, kThreads, kTile, true>;
  static constexpr bool kBulk = Loader::kBulk;
  static constexpr int kStageElems = Loader::kStageElems;
  static constexpr size_t kSmemBytes = kDecodeStages * (size_t)kStageElems * sizeof(T);
  static_assert(D <= 128 && kKSteps % 2 == 0, "tensor-core body: head dim 64 or 128");
  static_assert(kWarps * 16 * (D + 1) * sizeof(float) <= kSmemBytes, "merge scratch fits");
  static_assert(!kBulk || kTile % 64 == 0, "grouped rows: chunks of 16 tokens from 64-token blocks");

  // Element (row, 16-byte chunk) of a stage: swizzled (cp.async), or grouped rows (bulk copies).
  static __device__ __forceinline__ const T *at(const T *base, int row, int chunk) {
    if constexpr (kBulk) return base + Loader::row_offset(row) + chunk * 8;
    return base + row * D + (chunk ^ (row & 7)) * 8;
  }
  // Tile row of n-index i (0..7) of half nt of chunk j. Contiguous 16 tokens, or (grouped rows) token
  // i * 8 + 2 * (j % 4) + nt of the chunk's 64-token block: the 8 rows of one ldmatrix are then the same
  // row of 8 different groups, hence 8 different banks. Softmax does not care which tokens a chunk holds,
  // so long as K, the mask and V agree.
  static __device__ __forceinline__ int tok_row(int j, int i, int nt) {
    if constexpr (kBulk) return (j >> 2) * 64 + i * 8 + 2 * (j & 3) + nt;
    return j * 16 + nt * 8 + i;
  }

  static __device__ void run(const DecodeParams &p, const PlanTask task, T *smem) {
    const PlanRow row = plan_rows(p.plan)[task.row];
    const int head = task_head(task), split = task_split(task);
    using Rows = TaskRows<kQueries>;
    const int rows = Rows::count(row, p.group);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, r0 = lane >> 2, cq = lane & 3;

    // Q as A fragments: rows r0 and r0 + 8 (query rows), columns cq * 2 (+8) of each k-step.
    const T *q0 = static_cast<const T *>(p.q) + Rows::qo(p, task.row, row, head, r0) * D;
    const T *q8 = static_cast<const T *>(p.q) + Rows::qo(p, task.row, row, head, r0 + 8) * D;
    uint32_t qa[kKSteps][4];
#pragma unroll
    for (int ks = 0; ks < kKSteps; ks++) {
      const int c = ks * 16 + cq * 2;
      qa[ks][0] = r0 < rows ? *reinterpret_cast<const uint32_t *>(q0 + c) : 0u;
      qa[ks][1] = r0 + 8 < rows ? *reinterpret_cast<const uint32_t *>(q8 + c) : 0u;
      qa[ks][2] = r0 < rows ? *reinterpret_cast<const uint32_t *>(q0 + c + 8) : 0u;
      qa[ks][3] = r0 + 8 < rows ? *reinterpret_cast<const uint32_t *>(q8 + c + 8) : 0u;
    }
    // Tokens each of this lane's two rows sees (the row's context, less the queries after its own).
    const int visible0 = kQueries ? row_visible(row, p.group, r0) : 0;
    const int visible8 = kQueries ? row_visible(row, p.group, r0 + 8) : 0;

    float o[kNTiles][4];
#pragma unroll
    for (int n = 0; n < kNTiles; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // rows r0 and r0 + 8; l is this lane's share

    __shared__ int claim_ring[TileSchedule::kRing];
    const TaskTiles tiles = task_tiles<kTile>(p, task, row, head, claim_ring);
    Loader loader{static_cast<const T *>(p.k), static_cast<const T *>(p.v), row_table(p.table, p.table_stride, row),
                  tiles.tok_begin, tiles.tok_end, head, p.num_kv_heads, p.page_shift};
    auto tile_math = [&](int tile, const T *ks_, const T *vs_, int valid) {
      // Per row, the tile's tokens it may see: `valid`, or fewer where the causal mask ends inside it.
      const int first = kQueries ? tiles.tok_begin + tile * kTile : 0;
      const int seen0 = kQueries ? min(valid, visible0 - first) : valid;
      const int seen8 = kQueries ? min(valid, visible8 - first) : valid;
      for (int j = warp; j < kChunks; j += kWarps) {
        if (tok_row(j, 0, 0) >= valid) break;  // the chunk's first row (rows grow with j)
        float s[2][4] = {};
#pragma unroll
        for (int kk = 0; kk < kKSteps; kk += 2) {
#pragma unroll
          for (int nt = 0; nt < 2; nt++) {
            uint32_t b[4];  // K rows of half nt of the chunk; chunks 2kk, 2kk+1, 2kk+2, 2kk+3
            ldmatrix_x4(b, at(ks_, tok_row(j, lane & 7, nt), 2 * kk + (lane >> 3)));
            MmaOp<T>::run(s[nt], qa[kk], b[0], b[1]);
            MmaOp<T>::run(s[nt], qa[kk + 1], b[2], b[3]);
          }
        }
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int tok = tok_row(j, cq * 2 + (e & 1), nt);
            s[nt][e] = tok < (e < 2 ? seen0 : seen8) ? s[nt][e] * p.scale_log2 : -INFINITY;
            mx[e >> 1] = fmaxf(mx[e >> 1], s[nt][e]);
          }
        // A causal mask may hide a whole chunk from a row; a decode row sees every chunk's first token.
        float sc[2], base[2];
        if constexpr (kQueries) {
          fragment_rescale_masked(mx, m, l, sc, base);
        } else {
          fragment_rescale(mx, m, l, sc);
          base[0] = m[0], base[1] = m[1];
        }
#pragma unroll
        for (int n = 0; n < kNTiles; n++) {
          o[n][0] *= sc[0];
          o[n][1] *= sc[0];
          o[n][2] *= sc[1];
          o[n][3] *= sc[1];
        }
        float pr[2][4];
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            pr[nt][e] = exp2f(s[nt][e] - base[e >> 1]);
            l[e >> 1] += pr[nt][e];
          }
        // The S fragments of tokens 0-7 and 8-15 are exactly P's A fragment for k = 16 tokens.
        const uint32_t pa[4] = {pack2<T>(pr[0][0], pr[0][1]), pack2<T>(pr[0][2], pr[0][3]),
                                pack2<T>(pr[1][0], pr[1][1]), pack2<T>(pr[1][2], pr[1][3])};
#pragma unroll
        for (int n = 0; n < kNTiles; n += 2) {
          uint32_t b[4];  // V rows of halves 0 and 1 of the chunk, chunks n and n + 1, transposed
          ldmatrix_x4_trans(b, at(vs_, tok_row(j, lane & 7, (lane >> 3) & 1), n + (lane >> 4)));
          MmaOp<T>::run(o[n], pa, b[0], b[1]);
          MmaOp<T>::run(o[n + 1], pa, b[2], b[3]);
        }
      }
    };
    const int done = stream_task_tiles(loader, tiles.sched, smem, tile_math);

    // Each warp's state into the reused pipeline memory, then the shared epilogue merges the warps.
    float *sm_lse = reinterpret_cast<float *>(smem);
    float *sm_o = sm_lse + kWarps * 16;
#pragma unroll
    for (int i = 0; i < 2; i++) {
      l[i] = quad_sum(l[i]);
      const int y = r0 + 8 * i;
      if (y >= rows) continue;
      const float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
      float *dst = sm_o + (warp * rows + y) * D + cq * 2;
#pragma unroll
      for (int n = 0; n < kNTiles; n++) {
        dst[n * 8] = o[n][2 * i] * inv;
        dst[n * 8 + 1] = o[n][2 * i + 1] * inv;
      }
      if (cq == 0) sm_lse[warp * rows + y] = l[i] > 0.f ? m[i] + __log2f(l[i]) : -INFINITY;
    }
    __syncthreads();
    write_task_output<T, D, kThreads, kSmemBytes, kQueries>(p, task.row, head, split, row, sm_lse, sm_o, kWarps, sm_lse,
                                      tiles.sched.cursor ? done : -1, tiles.sched.ntiles);
    __syncthreads();  // the next task's prologue reuses this memory
  }
};

}  // namespace pkv
