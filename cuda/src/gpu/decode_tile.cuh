// Tile loaders: one pipeline stage of K and V (kTile tokens of one KV head) gathered from paged memory
// into shared memory, with 16-byte cp.async (TileLoader, every GPU) or Hopper bulk copies
// (BulkTileLoader, sm_90+). Page ids of the next tile are fetched a tile ahead into registers, so the
// block-table read never stalls the copy issue. CpAsyncLoad and BulkLoad (at the end) are the loader
// axis that the task bodies take as a template parameter.
#pragma once
#include "decode_launch.h"
#include "decode_vec.cuh"

namespace pkv {

// Which rows of a tile a thread copies with cp.async: kVecsPerRow threads per row, each one 16-byte
// column, the block covering kThreads / kVecsPerRow rows per pass; and their page ids, fetched ahead.
template <int kThreads, int kVecsPerRow, int kTile>
struct TileRows {
  static constexpr int kRowsPerPass = kThreads / kVecsPerRow;  // rows one pass of the block covers
  static constexpr int kPasses = kTile / kRowsPerPass;         // 16-byte copies per thread per tile
  static_assert(kTile % kRowsPerPass == 0, "tile rows must be a whole number of passes");

  static __device__ __forceinline__ int row_of(int pass) { return threadIdx.x / kVecsPerRow + pass * kRowsPerPass; }
  static __device__ __forceinline__ int col_of() { return threadIdx.x % kVecsPerRow; }

  // Page ids of this thread's rows of `tile` (a plain load: its latency overlaps whatever comes next).
  static __device__ __forceinline__ void fetch_pages(const int32_t *table_row, int tok_begin, int tok_end, int page_shift,
                                                     int tile, int32_t (&pages)[kPasses]) {
#pragma unroll
    for (int p = 0; p < kPasses; p++) {
      int tok = tok_begin + tile * kTile + row_of(p);
      pages[p] = tok < tok_end ? __ldg(table_row + (tok >> page_shift)) : 0;
    }
  }
};

// kSwizzle: the 16-byte chunk c of row r is stored at chunk c ^ (r % 8), so ldmatrix's eight row reads
// of one column land in eight different banks (tensor-core path).
template <typename T, int D, int kThreads, int kTile, bool kSwizzle>
struct TileLoader {
  static constexpr bool kBulk = false;
  static constexpr int kTileTokens = kTile;
  static constexpr int kStageElems = 2 * kTile * D;  // K then V
  static constexpr int kVecsPerRow = D / 8;
  using Rows = TileRows<kThreads, kVecsPerRow, kTile>;
  static constexpr int kPasses = Rows::kPasses;

  const T *k;
  const T *v;
  const int32_t *table_row;  // this sequence's row of the device block table
  int32_t tok_begin, tok_end;
  int32_t head, num_kv_heads, page_shift;

  __device__ __forceinline__ void fetch_pages(int tile, int32_t (&pages)[kPasses]) const {
    Rows::fetch_pages(table_row, tok_begin, tok_end, page_shift, tile, pages);
  }

  // Copies `tile` into the stage; rows past the task's end are zero-filled.
  __device__ __forceinline__ void issue(int tile, const int32_t (&pages)[kPasses], T *ks, T *vs) const {
    const int col = Rows::col_of();
#pragma unroll
    for (int p = 0; p < kPasses; p++) {
      int row = Rows::row_of(p);
      int tok = tok_begin + tile * kTile + row;
      bool valid = tok < tok_end;
      // 64-bit: a layer can hold well over 2^31 elements.
      int64_t slice = ((int64_t)pages[p] * num_kv_heads + head) << page_shift;
      int64_t off = valid ? (slice + (tok & ((1 << page_shift) - 1))) * D + col * 8 : 0;
      const int at = row * D + (kSwizzle ? col ^ (row & 7) : col) * 8;
      cp_async16(ks + at, k + off, valid ? 16 : 0);
      cp_async16(vs + at, v + off, valid ? 16 : 0);
    }
  }
};

}  // namespace pkv

namespace pkv {

// Which rows of a tile a thread copies with bulk copies: copy c is index threadIdx.x + c * kThreads of the
// tile's K rows then V rows; a row past the task's end copies the task's last token (so its page id is
// always a real one).
template <int kThreads, int kTile>
struct BulkRows {
  static constexpr int kCopies = 2 * kTile / kThreads;  // rows per thread per tile (K and V)
  static_assert((2 * kTile) % kThreads == 0, "whole copies per thread");

  static __device__ __forceinline__ int index_of(int c) { return threadIdx.x + c * kThreads; }
  static __device__ __forceinline__ int token_of(int tok_begin, int tok_end, int tile, int c) {
    return min(tok_begin + tile * kTile + index_of(c) % kTile, tok_end - 1);
  }
  static __device__ __forceinline__ void fetch_pages(const int32_t *table_row, int tok_begin, int tok_end, int page_shift,
                                                     int tile, int32_t (&pages)[kCopies]) {
#pragma unroll
    for (int c = 0; c < kCopies; c++) pages[c] = __ldg(table_row + (token_of(tok_begin, tok_end, tile, c) >> page_shift));
  }
};

// Hopper bulk copies (PKV_LOADER_BULK, sm_90+): rows are stored in groups of 8 consecutive tokens
// (contiguous, as in the page) with 16 bytes of padding after each group, and a group that lies whole in
// one page and inside the task is one copy of 8 rows (2 KiB at head dim 128) that completes on the
// stage's mbarrier; other groups (page size under 8, the task's last group) copy row by row. The math
// gives each ldmatrix the same row of 8 different groups (TensorBody::tok_row), so its 8 row reads land
// in 8 different banks without a swizzle, which bulk copies cannot apply. Rows past the task's end copy
// the task's last token again (finite data; its scores are masked to -inf, so P is 0 there): every
// stage's byte count stays fixed and no ordinary store touches memory the copy engine writes.
// Measured on H100 (docs/kernels.md, "Task bodies and loaders"): one copy per row (128 per tile) was slower on short and
// latency-bound steps; one per 8 rows is 2-4% faster on big steps and 7-14% on short ones.
template <typename T, int D, int kThreads, int kTile>
struct BulkTileLoader {
  static constexpr bool kBulk = true;
  static constexpr int kTileTokens = kTile;
  static constexpr int kGroupStride = 8 * D + 8;  // elements
  static constexpr int kTileElems = (kTile / 8) * kGroupStride;
  static constexpr int kStageElems = 2 * kTileElems;  // K then V
  using Rows = BulkRows<kThreads, kTile>;
  static constexpr int kCopies = Rows::kCopies;
  static constexpr int kPasses = kCopies;  // page ids per thread per tile
  static constexpr unsigned kRowBytes = D * sizeof(T);
  static constexpr unsigned kStageBytes = 2 * kTile * kRowBytes;  // what one stage's barrier waits for
  static constexpr unsigned kArrivals = 1;  // thread 0's arming
  static_assert(kRowBytes % 16 == 0 && (kGroupStride * sizeof(T)) % 16 == 0, "bulk copies move 16-byte units");
  static_assert(kTile % 8 == 0, "whole groups");

  static __device__ __forceinline__ int row_offset(int row) { return (row >> 3) * kGroupStride + (row & 7) * D; }

  const T *k;
  const T *v;
  const int32_t *table_row;
  int32_t tok_begin, tok_end;
  int32_t head, num_kv_heads, page_shift;

  __device__ __forceinline__ void fetch_pages(int tile, int32_t (&pages)[kPasses]) const {
    Rows::fetch_pages(table_row, tok_begin, tok_end, page_shift, tile, pages);
  }

  // ks/vs: this stage's K and V rows; bar: this stage's barrier (thread 0 has armed it with kStageBytes).
  __device__ __forceinline__ void issue(int tile, const int32_t (&pages)[kPasses], T *ks, T *vs, uint64_t *bar) const {
    const int pmask = (1 << page_shift) - 1;
#pragma unroll
    for (int c = 0; c < kCopies; c++) {
      const int j = Rows::index_of(c), row = j % kTile, tok = Rows::token_of(tok_begin, tok_end, tile, c);
      const int64_t slice = ((int64_t)pages[c] * num_kv_heads + head) << page_shift;
      const int64_t off = (slice + (tok & pmask)) * D;
      T *dst = (j < kTile ? ks : vs) + row_offset(row);
      const T *src = (j < kTile ? k : v) + off;
      unsigned bytes = kRowBytes;
      const int tok0 = tok_begin + tile * kTile + (row & ~7);
      if (tok0 + 8 <= tok_end && (tok0 & pmask) + 8 <= pmask + 1) {  // the group is one copy, by its row 0
        if (row & 7) continue;
        bytes = 8 * kRowBytes;
      }
      bulk_copy_g2s(dst, src, bytes, bar);
    }
  }
};

}  // namespace pkv

namespace pkv {

// The loader axis of a task body (a template parameter): which loader a body of kThreads threads and
// kTile-token stages uses. kSwizzle: the body's ldmatrix reads want swizzled rows (cp.async only).
struct CpAsyncLoad {
  template <typename T, int D, int kThreads, int kTile, bool kSwizzle>
  using Loader = TileLoader<T, D, kThreads, kTile, kSwizzle>;
};
struct BulkLoad {
  template <typename T, int D, int kThreads, int kTile, bool kSwizzle>
  using Loader = BulkTileLoader<T, D, kThreads, kTile>;
};

}  // namespace pkv
