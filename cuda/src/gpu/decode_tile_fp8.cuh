// The FP8 tile loaders: one pipeline stage of K and V codes (kTile tokens of one KV head, half the bytes of
// a 16-bit row) plus each token's K and V scale (4-byte cp.async), gathered from FP8 pages (kv_format.h:
// codes, then the page's scales): by 16-byte cp.async (Fp8TileLoader, every GPU; a stage half is
// [kTile][D] codes then kTile floats) or by Hopper bulk copies (Fp8BulkTileLoader, sm_90+).
#pragma once
#include <cuda_fp8.h>

#include "../core/kv_format.h"
#include "decode_launch.h"
#include "decode_pipeline.cuh"
#include "decode_tile.cuh"
#include "decode_vec.cuh"

namespace pkv {

__device__ __forceinline__ void cp_async4(void *smem, const void *gmem, int src_bytes) {
  unsigned dst = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(gmem), "r"(src_bytes));
}

// kSwizzle (tensor-core body): the 16-byte chunk c of row r is stored at chunk c ^ (r % chunks per row,
// at most 8), so the fragment loads of 8 consecutive rows' same chunk land in different banks.
// What both FP8 loaders read: this layer's pages, the sequence's block-table row, the task's token range.
struct Fp8Pages {
  const uint8_t *k;  // this layer's pages
  const uint8_t *v;
  const int32_t *table_row;
  int32_t tok_begin, tok_end;
  int32_t head, num_kv_heads, page_shift;
  int64_t page_bytes, code_bytes;  // page_format of the pool

  // The pages of a task's token range (task_tiles) at head dim D.
  template <int D>
  static __device__ __forceinline__ Fp8Pages of(const DecodeParams &p, const PlanRow &row, const TaskTiles &tiles, int head) {
    const PageFormat format = page_format(PKV_DTYPE_FP8_E4M3, p.num_kv_heads, 1 << p.page_shift, D);
    return {static_cast<const uint8_t *>(p.k), static_cast<const uint8_t *>(p.v),
            row_table(p.table, p.table_stride, row), tiles.tok_begin, tiles.tok_end, head, p.num_kv_heads,
            p.page_shift, format.page_bytes, format.code_bytes};
  }
};

template <int D, int kThreads, int kTile, bool kSwizzle = false>
struct Fp8TileLoader : Fp8Pages {
  static constexpr bool kBulk = false;
  static constexpr int kTileTokens = kTile;
  static constexpr int kHalfBytes = kTile * (D + 4);  // codes, then scales
  static constexpr int kStageElems = 2 * kHalfBytes;  // bytes: K half then V half
  using Rows = TileRows<kThreads, D / 16, kTile>;  // a row's codes: D / 16 chunks of 16 bytes
  static constexpr int kPasses = Rows::kPasses;
  static_assert(kHalfBytes % 16 == 0, "stage halves stay 16-byte aligned");

  static constexpr int kSwizzleMask = (D / 16 < 8 ? D / 16 : 8) - 1;
  // Byte offset of 16-byte chunk c of row r within a stage half.
  static __device__ __forceinline__ int at(int r, int c) { return r * D + (kSwizzle ? c ^ (r & kSwizzleMask) : c) * 16; }

  // The loader of a task's token range (task_tiles) over this layer's pages.
  static __device__ __forceinline__ Fp8TileLoader of(const DecodeParams &p, const PlanRow &row, const TaskTiles &tiles,
                                                     int head) {
    return {Fp8Pages::of<D>(p, row, tiles, head)};
  }

  static __device__ __forceinline__ const float *scales(const uint8_t *half) {
    return reinterpret_cast<const float *>(half + kTile * D);
  }

  __device__ __forceinline__ void fetch_pages(int tile, int32_t (&pages)[kPasses]) const {
    Rows::fetch_pages(table_row, tok_begin, tok_end, page_shift, tile, pages);
  }

  // Rows past the task's end are zero-filled, scales too (their scores are masked, their weights 0).
  __device__ __forceinline__ void issue(int tile, const int32_t (&pages)[kPasses], uint8_t *ks, uint8_t *vs) const {
    const int col = Rows::col_of();
#pragma unroll
    for (int p = 0; p < kPasses; p++) {
      const int row = Rows::row_of(p);
      const int tok = tok_begin + tile * kTile + row;
      const bool valid = tok < tok_end;
      // 64-bit: a layer can hold well over 2^31 bytes.
      const int64_t r = ((int64_t)head << page_shift) + (tok & ((1 << page_shift) - 1));
      const int64_t page = valid ? (int64_t)pages[p] * page_bytes : 0;
      const int64_t code = valid ? page + r * D + col * 16 : 0;
      cp_async16(ks + at(row, col), k + code, valid ? 16 : 0);
      cp_async16(vs + at(row, col), v + code, valid ? 16 : 0);
      if (col == 0) {
        const int64_t scale = valid ? page + code_bytes + r * 4 : 0;
        cp_async4(ks + kTile * D + row * 4, k + scale, valid ? 4 : 0);
        cp_async4(vs + kTile * D + row * 4, v + scale, valid ? 4 : 0);
      }
    }
  }
};

// The stage's barrier tracks this thread's earlier cp.async copies: it counts one arrival once they land
// (.noinc: the barrier's expected count includes this arrival).
__device__ __forceinline__ void cp_async_arrive_on(uint64_t *bar) {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"((unsigned)__cvta_generic_to_shared(bar))
               : "memory");
#endif
}

// Hopper bulk copies of FP8 codes (PKV_LOADER_BULK, sm_90+, tensor-core body): a stage half holds the
// tile's rows in groups of 8 consecutive tokens (contiguous, as in the page's (page, head) run of codes),
// 16 bytes of padding after each group, then kTile floats of scales. A group that lies whole in one page
// and inside the task is one copy (8 rows, 1 KiB at head dim 128); other groups copy row by row. Bulk
// copies move 16-byte multiples from 16-byte addresses, which a token's 4-byte scale is not: scales go by
// 4-byte cp.async, which every thread hands to the stage's barrier (cp_async_arrive_on), so one barrier
// wait covers codes and scales. Rows past the task's end copy the task's last token's codes again (finite)
// and get scale 0 (their scores are masked; the body's V reference ignores them); no ordinary store
// touches the memory the copy engine writes. The padding spreads the body's fragment reads over the banks
// when it reads the same row of different groups together (Fp8TensorBody::tok_row).
template <int D, int kThreads, int kTile>
struct Fp8BulkTileLoader : Fp8Pages {
  static constexpr bool kBulk = true;
  static constexpr int kTileTokens = kTile;
  static constexpr int kGroupStride = 8 * D + 16;  // bytes
  static constexpr int kCodeBytes = (kTile / 8) * kGroupStride;
  static constexpr int kHalfBytes = kCodeBytes + 4 * kTile;  // codes, then scales
  static constexpr int kStageElems = 2 * kHalfBytes;         // bytes: K half then V half
  using Rows = BulkRows<kThreads, kTile>;
  static constexpr int kCopies = Rows::kCopies;
  static constexpr int kPasses = kCopies;                    // page ids per thread per tile
  static constexpr unsigned kStageBytes = 2 * kTile * D;     // what the bulk copies of one stage bring
  static constexpr unsigned kArrivals = 1 + kThreads;        // thread 0's arming, every thread's cp.async
  static_assert(kTile % 8 == 0, "whole groups");
  static_assert(D % 16 == 0 && kHalfBytes % 16 == 0, "bulk copies move 16-byte units to 16-byte addresses");

  // Byte offset of 16-byte chunk c of row r within a stage half.
  static __device__ __forceinline__ int at(int r, int c) { return (r >> 3) * kGroupStride + (r & 7) * D + c * 16; }
  static __device__ __forceinline__ const float *scales(const uint8_t *half) {
    return reinterpret_cast<const float *>(half + kCodeBytes);
  }

  static __device__ __forceinline__ Fp8BulkTileLoader of(const DecodeParams &p, const PlanRow &row, const TaskTiles &tiles,
                                                         int head) {
    return {Fp8Pages::of<D>(p, row, tiles, head)};
  }

  __device__ __forceinline__ void fetch_pages(int tile, int32_t (&pages)[kPasses]) const {
    Rows::fetch_pages(table_row, tok_begin, tok_end, page_shift, tile, pages);
  }

  // ks/vs: this stage's K and V halves; bar: this stage's barrier (thread 0 has armed it with kStageBytes).
  __device__ __forceinline__ void issue(int tile, const int32_t (&pages)[kPasses], uint8_t *ks, uint8_t *vs,
                                        uint64_t *bar) const {
    const int pmask = (1 << page_shift) - 1;
#pragma unroll
    for (int c = 0; c < kCopies; c++) {
      const int j = Rows::index_of(c), row = j % kTile, tok = Rows::token_of(tok_begin, tok_end, tile, c);
      const bool valid = tok_begin + tile * kTile + row < tok_end;
      // 64-bit: a layer can hold well over 2^31 bytes.
      const int64_t page = (int64_t)pages[c] * page_bytes;
      const int64_t r = ((int64_t)head << page_shift) + (tok & pmask);
      uint8_t *half = j < kTile ? ks : vs;
      const uint8_t *src = j < kTile ? k : v;
      cp_async4(half + kCodeBytes + row * 4, src + (valid ? page + code_bytes + r * 4 : 0), valid ? 4 : 0);
      unsigned bytes = D;
      const int tok0 = tok_begin + tile * kTile + (row & ~7);
      if (tok0 + 8 <= tok_end && (tok0 & pmask) + 8 <= pmask + 1) {  // the group is one copy, by its row 0
        if (row & 7) continue;
        bytes = 8 * D;
      }
      bulk_copy_g2s(half + at(row, 0), src + page + r * D, bytes, bar);
    }
    cp_async_arrive_on(bar);
  }
};

// 16 e4m3 codes (one 16-byte load) to floats: cvt.rn.f16x2.e4m3x2 per pair on sm_89+, exact.
__device__ __forceinline__ void fp8x16_to_float(const uint4 &raw, float (&f)[16]) {
  const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int w = 0; w < 4; w++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const __half2_raw pair = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(words[w] >> (16 * h)), __NV_E4M3);
      const float2 v = __half22float2(__half2(pair));
      f[4 * w + 2 * h] = v.x;
      f[4 * w + 2 * h + 1] = v.y;
    }
}

}  // namespace pkv
