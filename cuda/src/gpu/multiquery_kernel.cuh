// The multi-query task kernel: one block per task (multiquery_image.h), 4 warps. The task's query rows
// (tokens x group, at most 64) sit in shared memory; K/V tiles of the task's context range stream
// through a two-stage cp.async pipeline, each loaded once for all rows, and mma.m16n8k16 computes
// S = Q K^T and O += P V with fp32 accumulators and an online softmax in the log2 domain.
//
// The warps share the work by the rows' count: with 16 rows or fewer (speculative sizes) the four warps
// take a quarter of each K/V tile each (a memory-bound step: every warp's tensor cores work on every
// tile), with 17-32 rows two warps per 16 rows take half a tile each, and with more every warp takes 16
// rows of the whole tile (a long chunk: compute-bound, FlashAttention-2's split of the queries). At the
// end the warps' states meet in shared memory and merge by log-sum-exp; a split task writes its fp32
// partial, which the merge kernel (multiquery_merge.cuh) combines with its siblings'.
#pragma once
#include "../core/multiquery_image.h"
#include "decode_mma.cuh"
#include "decode_vec.cuh"
#include "multiquery_launch.h"

namespace pkv {

template <int D>
struct MqKernelShape {
  static constexpr int kThreads = 128, kWarps = 4;
  static constexpr int kTile = D == 256 ? 32 : 64;  // context tokens per stage (a multiple of 16 dividing kMqKvTile)
  static constexpr int kStride = D + 8;             // shared rows padded by 16 bytes: ldmatrix without bank conflicts
  static constexpr int kQElems = kMqTileRows * kStride, kKvElems = kTile * kStride;
  static constexpr size_t kSmemBytes = (size_t)(kQElems + 4 * kKvElems) * 2;  // Q, then K and V of two stages
  // The warps' final states (16 rows x D outputs, max and sum each) reuse the K/V stages.
  static constexpr size_t kStateFloats = 16 * (D + 2);
  static_assert(kWarps * kStateFloats * 4 <= 4 * (size_t)kKvElems * 2, "the warp states fit in the K/V stages");
  static_assert(kMqKvTile % kTile == 0, "split ranges are whole tiles");
};

// The warps' division of a task of `rows` query rows: row groups of 16 rows, each tile cut into `parts`.
struct MqWarpSplit {
  int groups, parts;
};
template <int D>
__device__ __forceinline__ MqWarpSplit mq_warp_split(int rows) {
  const int groups = (rows + 15) / 16;
  int parts = groups == 1 ? 4 : groups == 2 ? 2 : 1;
  parts = min(parts, MqKernelShape<D>::kTile / 16);
  return {groups, parts};
}

template <typename T, int D>
__global__ void __launch_bounds__(128) multiquery_kernel(MqParams p) {
  using S = MqKernelShape<D>;
  constexpr int kTile = S::kTile, kStride = S::kStride, kChunks = D / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T *sq = reinterpret_cast<T *>(smem_raw);
  T *skv = sq + S::kQElems;  // stage s: K at skv + 2 s kKvElems, V after it

  const MqTask task = mq_tasks(p.image)[p.first_task + blockIdx.x];
  const MqRow row = mq_rows(p.image)[task.row];
  const int g = p.group, hq = p.num_kv_heads * g, rows = task.q_count * g;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int page_size = 1 << p.page_shift;
  const int32_t *table = p.table + (int64_t)row.table_row * p.table_stride;
  const T *kbase = static_cast<const T *>(p.k), *vbase = static_cast<const T *>(p.v);

  // Q rows (zero past the task's rows: their scores stay finite and are never written).
  for (int i = tid; i < kMqTileRows * kChunks; i += S::kThreads) {
    const int r = i / kChunks, c = i % kChunks;
    T *dst = sq + r * kStride + c * 8;
    if (r < rows) {
      const int64_t qo = ((int64_t)row.q_offset + task.q_begin + r / g) * hq + (int64_t)task.head * g + r % g;
      cp_async16(dst, static_cast<const T *>(p.q) + qo * D + c * 8, 16);
    } else {
      *reinterpret_cast<uint4 *>(dst) = make_uint4(0, 0, 0, 0);
    }
  }
  // One tile of K and V into stage `stage`; tokens past the range are zero-filled. A thread copies 16-byte
  // chunk c of kPieces tokens kTokStep apart. Their page ids are fetched a tile ahead (fetch_pages), so the
  // copies of a tile issue back to back instead of each waiting for its page id.
  constexpr int kPieces = kTile * kChunks / S::kThreads, kTokStep = S::kThreads / kChunks;
  static_assert(kPieces * S::kThreads == kTile * kChunks && S::kThreads % kChunks == 0, "whole pieces per thread");
  const int piece_chunk = tid % kChunks, piece_tok = tid / kChunks;
  auto fetch_pages = [&](int tile_begin, int32_t (&pages)[kPieces]) {
#pragma unroll
    for (int k = 0; k < kPieces; k++) {
      const int tok = tile_begin + piece_tok + k * kTokStep;
      pages[k] = tok < task.kv_end ? __ldg(table + (tok >> p.page_shift)) : -1;
    }
  };
  auto load_tile = [&](int stage, int tile_begin, const int32_t (&pages)[kPieces]) {
    T *sk = skv + 2 * stage * S::kKvElems, *sv = sk + S::kKvElems;
#pragma unroll
    for (int k = 0; k < kPieces; k++) {
      const int t = piece_tok + k * kTokStep, tok = tile_begin + t;
      const bool in = pages[k] >= 0;
      const int64_t at =
          in ? (((int64_t)pages[k] * p.num_kv_heads + task.head) * page_size + (tok & (page_size - 1))) * D + piece_chunk * 8
             : 0;
      cp_async16(sk + t * kStride + piece_chunk * 8, kbase + at, in ? 16 : 0);
      cp_async16(sv + t * kStride + piece_chunk * 8, vbase + at, in ? 16 : 0);
    }
  };

  const MqWarpSplit split = mq_warp_split<D>(rows);
  const int group = warp % split.groups, part = warp / split.groups;
  const bool active = warp < split.groups * split.parts;
  const int part_len = kTile / split.parts, row0 = group * 16;
  // This thread's two rows (lane / 4 and lane / 4 + 8 of the warp's 16) and their query positions.
  int pos[2];
#pragma unroll
  for (int h = 0; h < 2; h++) pos[h] = mq_position(row, task.q_begin + min(row0 + lane / 4 + 8 * h, rows - 1) / g);
  const int first_pos = mq_position(row, task.q_begin);  // the task's earliest query: no mask before it

  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  // A warp's 16 query rows are the same on every tile: up to head dim 128 their A fragments stay in
  // registers (at 256 they would not fit beside the output's).
  constexpr bool kQInRegisters = D <= 128;
  uint32_t qa[kQInRegisters ? D / 16 : 1][4];

  const int ntiles = (task.kv_end - task.kv_begin + kTile - 1) / kTile;
  int32_t pages[kPieces];  // the page ids of the next tile to load
  fetch_pages(task.kv_begin, pages);
  load_tile(0, task.kv_begin, pages);
  cp_async_commit();
  if (ntiles > 1) fetch_pages(task.kv_begin + kTile, pages);
  for (int it = 0; it < ntiles; it++) {
    const int tile_begin = task.kv_begin + it * kTile;
    if (it + 1 < ntiles) load_tile((it + 1) & 1, tile_begin + kTile, pages);
    cp_async_commit();
    if (it + 2 < ntiles) fetch_pages(tile_begin + 2 * kTile, pages);  // in flight while this tile computes
    cp_async_wait<1>();
    __syncthreads();
    const T *sk = skv + 2 * (it & 1) * S::kKvElems, *sv = sk + S::kKvElems;
    if (active) {
      if (kQInRegisters && it == 0)  // Q landed with the first tile
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) ldmatrix_x4(qa[kk], sq + (row0 + (lane & 15)) * kStride + kk * 16 + (lane >> 4) * 8);
      constexpr int kMaxN = kTile / 8;  // score n-tiles of a whole tile (a part uses part_len / 8)
      const int nt = part_len / 8, pb = part * part_len;
      float s[kMaxN][4];
#pragma unroll
      for (int j = 0; j < kMaxN; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) {
        uint32_t a[4];
        if constexpr (kQInRegisters) a[0] = qa[kk][0], a[1] = qa[kk][1], a[2] = qa[kk][2], a[3] = qa[kk][3];
        else ldmatrix_x4(a, sq + (row0 + (lane & 15)) * kStride + kk * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int jj = 0; jj < kMaxN / 2; jj++) {
          if (2 * jj >= nt) break;
          uint32_t b[4];
          ldmatrix_x4(b, sk + (pb + jj * 16 + (lane >> 4) * 8 + (lane & 7)) * kStride + kk * 16 + ((lane >> 3) & 1) * 8);
          MmaOp<T>::run(s[2 * jj], a, b[0], b[1]);
          MmaOp<T>::run(s[2 * jj + 1], a, b[2], b[3]);
        }
      }
      // Scale, and mask where the tile reaches past the range's end or the earliest query's position.
      const bool masked = tile_begin + kTile > task.kv_end || tile_begin + kTile > first_pos + 1;
#pragma unroll
      for (int j = 0; j < kMaxN; j++) {
        if (j >= nt) break;
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int tok = tile_begin + pb + j * 8 + (lane & 3) * 2 + (e & 1);
          s[j][e] = masked && (tok >= task.kv_end || tok > pos[e >> 1]) ? -INFINITY : s[j][e] * p.scale_log2;
        }
      }
#pragma unroll
      for (int h = 0; h < 2; h++) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < kMaxN; j++)
          if (j < nt) mx = fmaxf(mx, fmaxf(s[j][2 * h], s[j][2 * h + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m[h], mx);
        const float m_use = m_new == -INFINITY ? 0.f : m_new;  // a row masked so far: every p is 0, not NaN
        const float alpha = exp2f(m[h] - m_use);
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < kMaxN; j++) {
          if (j >= nt) break;
          s[j][2 * h] = exp2f(s[j][2 * h] - m_use);
          s[j][2 * h + 1] = exp2f(s[j][2 * h + 1] - m_use);
          sum += s[j][2 * h] + s[j][2 * h + 1];
        }
        l[h] = l[h] * alpha + sum;  // this thread's columns; the quad's sum is taken at the end
        m[h] = m_new;
#pragma unroll
        for (int n = 0; n < D / 8; n++) o[n][2 * h] *= alpha, o[n][2 * h + 1] *= alpha;
      }
#pragma unroll
      for (int kk = 0; kk < kMaxN / 2; kk++) {
        if (2 * kk >= nt) break;
        const uint32_t a[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]), pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                               pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
        for (int dd = 0; dd < D / 16; dd++) {
          uint32_t b[4];
          ldmatrix_x4_trans(b, sv + (pb + kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * kStride + dd * 16 + (lane >> 4) * 8);
          MmaOp<T>::run(o[2 * dd], a, b[0], b[1]);
          MmaOp<T>::run(o[2 * dd + 1], a, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // the stage is consumed before the next iteration's copy overwrites it
  }
  cp_async_wait<0>();
  __syncthreads();

  // Each warp's state into the stages' memory: 16 rows x D unnormalised outputs, then max and sum.
  float *states = reinterpret_cast<float *>(skv);
  if (active) {
    float *st = states + warp * S::kStateFloats;
#pragma unroll
    for (int h = 0; h < 2; h++) {
      l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
      l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
      const int r = lane / 4 + 8 * h;
#pragma unroll
      for (int n = 0; n < D / 8; n++) {
        st[r * D + n * 8 + (lane & 3) * 2] = o[n][2 * h];
        st[r * D + n * 8 + (lane & 3) * 2 + 1] = o[n][2 * h + 1];
      }
      if ((lane & 3) == 0) st[16 * D + r] = m[h], st[16 * D + 16 + r] = l[h];
    }
  }
  __syncthreads();

  // Merge the parts of each row, then write the output (and lse) or the split's partial.
  const int64_t slot_floats = mq_slot_floats(D);
  for (int i = tid; i < rows * kChunks; i += S::kThreads) {
    const int r = i / kChunks, c = i % kChunks, grp = r / 16, rr = r % 16;
    float mx = -INFINITY;
    for (int q = 0; q < split.parts; q++) mx = fmaxf(mx, states[(q * split.groups + grp) * S::kStateFloats + 16 * D + rr]);
    float acc[8] = {}, sum = 0.f;
    for (int q = 0; q < split.parts; q++) {
      const float *st = states + (q * split.groups + grp) * S::kStateFloats;
      const float mq = st[16 * D + rr];
      if (mq == -INFINITY) continue;  // a part that saw no visible token
      const float w = exp2f(mq - mx);
      sum += w * st[16 * D + 16 + rr];
#pragma unroll
      for (int e = 0; e < 8; e++) acc[e] = fmaf(w, st[rr * D + c * 8 + e], acc[e]);
    }
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
#pragma unroll
    for (int e = 0; e < 8; e++) acc[e] *= inv;
    const float lse2 = sum > 0.f ? mx + __log2f(sum) : -INFINITY;
    if (task.slot < 0) {
      const int64_t qo = ((int64_t)row.q_offset + task.q_begin + r / g) * hq + (int64_t)task.head * g + r % g;
      reinterpret_cast<uint4 *>(static_cast<T *>(p.out) + qo * D)[c] = float_to_vec<T>(acc);
      if (p.lse && c == 0) p.lse[qo] = lse2 * 0.69314718055994530942f;
    } else {
      float *slot = p.partial + task.slot * slot_floats;
      reinterpret_cast<float4 *>(slot + (int64_t)r * D + c * 8)[0] = make_float4(acc[0], acc[1], acc[2], acc[3]);
      reinterpret_cast<float4 *>(slot + (int64_t)r * D + c * 8)[1] = make_float4(acc[4], acc[5], acc[6], acc[7]);
      if (c == 0) slot[mq_slot_lse(D) + r] = lse2;
    }
  }
}

}  // namespace pkv
