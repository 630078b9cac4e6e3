// The FP8 tile loader: one pipeline stage of K and V codes (kTile tokens of one KV head, 16-byte cp.async,
// half the bytes of a 16-bit row) plus each token's K and V scale (4-byte cp.async), gathered from FP8
// pages (kv_format.h: codes, then the page's scales). A stage half is [kTile][D] codes then kTile floats.
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
template <int D, int kThreads, int kTile, bool kSwizzle = false>
struct Fp8TileLoader {
  static constexpr bool kBulk = false;
  static constexpr int kTileTokens = kTile;
  static constexpr int kHalfBytes = kTile * (D + 4);  // codes, then scales
  static constexpr int kStageElems = 2 * kHalfBytes;  // bytes: K half then V half
  using Rows = TileRows<kThreads, D / 16, kTile>;  // a row's codes: D / 16 chunks of 16 bytes
  static constexpr int kPasses = Rows::kPasses;
  static_assert(kHalfBytes % 16 == 0, "stage halves stay 16-byte aligned");

  const uint8_t *k;  // this layer's pages
  const uint8_t *v;
  const int32_t *table_row;
  int32_t tok_begin, tok_end;
  int32_t head, num_kv_heads, page_shift;
  int64_t page_bytes, code_bytes;  // page_format of the pool

  static constexpr int kSwizzleMask = (D / 16 < 8 ? D / 16 : 8) - 1;
  // Byte offset of 16-byte chunk c of row r within a stage half.
  static __device__ __forceinline__ int at(int r, int c) { return r * D + (kSwizzle ? c ^ (r & kSwizzleMask) : c) * 16; }

  // The loader of a task's token range (task_tiles) over this layer's pages.
  static __device__ __forceinline__ Fp8TileLoader of(const DecodeParams &p, const PlanRow &row, const TaskTiles &tiles,
                                                     int head) {
    const PageFormat format = page_format(PKV_DTYPE_FP8_E4M3, p.num_kv_heads, 1 << p.page_shift, D);
    return {static_cast<const uint8_t *>(p.k), static_cast<const uint8_t *>(p.v),
            row_table(p.table, p.table_stride, row), tiles.tok_begin, tiles.tok_end, head, p.num_kv_heads,
            p.page_shift, format.page_bytes, format.code_bytes};
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
