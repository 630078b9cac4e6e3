// Tile load: one pipeline stage of K and V (TILE tokens of one KV head) gathered from paged memory into
// shared memory with 16-byte cp.async. Page ids of the next tile are fetched a tile ahead into registers,
// so the block-table read never stalls the copy issue.
#pragma once
#include "decode_launch.h"
#include "decode_vec.cuh"

namespace pkv {

template <typename T, int D>
struct TileLoader {
  static constexpr int kTile = decode_tile_tokens(D);
  static constexpr int kVecsPerRow = D / 8;
  static constexpr int kRowsPerPass = kDecodeThreads / kVecsPerRow;  // rows one pass of the block covers
  static constexpr int kPasses = kTile / kRowsPerPass;                 // 16-byte copies per thread per tile
  static_assert(kTile % kRowsPerPass == 0, "tile rows must be a whole number of passes");

  const T *k;
  const T *v;
  const int32_t *table_row;  // this sequence's row of the device block table
  int32_t tok_begin, tok_end;
  int32_t head, num_kv_heads, page_shift;
  int32_t pages[kPasses];    // page ids of the tile the next issue() copies

  __device__ __forceinline__ int row_of(int pass) const { return threadIdx.x / kVecsPerRow + pass * kRowsPerPass; }
  __device__ __forceinline__ int col_of() const { return threadIdx.x % kVecsPerRow; }

  __device__ __forceinline__ void fetch_pages(int tile) {
#pragma unroll
    for (int p = 0; p < kPasses; p++) {
      int tok = tok_begin + tile * kTile + row_of(p);
      pages[p] = tok < tok_end ? __ldg(table_row + (tok >> page_shift)) : 0;
    }
  }

  // Copies `tile` into the stage; rows past the task's end are zero-filled.
  __device__ __forceinline__ void issue(int tile, T *ks, T *vs) const {
    const int col = col_of();
#pragma unroll
    for (int p = 0; p < kPasses; p++) {
      int row = row_of(p);
      int tok = tok_begin + tile * kTile + row;
      bool valid = tok < tok_end;
      // 64-bit: a layer can hold well over 2^31 elements.
      int64_t slice = ((int64_t)pages[p] * num_kv_heads + head) << page_shift;
      int64_t off = valid ? (slice + (tok & ((1 << page_shift) - 1))) * D + col * 8 : 0;
      cp_async16(ks + row * D + col * 8, k + off, valid ? 16 : 0);
      cp_async16(vs + row * D + col * 8, v + off, valid ? 16 : 0);
    }
  }
};

}  // namespace pkv
