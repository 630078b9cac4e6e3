// The shared-prefix task kernel (shared_image.h): a fixed grid of 4-warp blocks striding over the
// section's tasks. A task is up to 128 query rows (members x group) of one KV head against a page range
// that all its members hold, so each K/V tile is read once for every row.
//
// The layout is FlashAttention-2's, for mma.sync m16n8k16 with fp32 accumulators:
// - each warp owns 32 query rows (two m16 row tiles) at D <= 128, so that every K/V fragment it loads
//   from shared memory by ldmatrix serves two MMAs: with 16 rows a warp the kernel was bound by
//   shared-memory bandwidth (~128 B/clk/SM), not by the tensor cores. O of 32 rows is 128 fp32
//   registers a thread at D 128, so Q waits in shared memory (one ldmatrix per row tile and k-step,
//   8 KB a warp per K tile); with 16 rows a warp (tasks of 32 rows or fewer, and D 256, whose O would
//   not fit twice) the Q fragments stay in registers;
// - S = Q K^T and O += P V per tile, the P fragment of S reused as the A operand of PV in registers;
// - the online softmax keeps the maxima in the log2 domain with the scale folded into one FFMA before
//   exp2 (valid for scale_log2 >= 0, which the engine guarantees);
// - K/V tiles of kTile tokens stream through a cp.async pipeline with one barrier per tile: the barrier
//   that makes tile i visible also proves every warp is done with tile i - 1, whose stage the copy of
//   tile i + STAGES - 1 then takes. K/V (and Q) rows are unpadded with their 16-byte chunks
//   XOR-swizzled. At D = 128 a block has 96 KB: 3 stages of 32 KB, or 2 stages and the 32 KB of Q on
//   the 32-row path; two blocks per SM (8 warps) on sm_90, and within sm_86/89's 99 KB.
// With 32 query rows or fewer (a few forks: memory-bound like decode) a warp's rows would leave warps
// idle, so the warps split each tile's tokens instead (PARTS 2 or 4) and their states meet by
// log-sum-exp in the epilogue. A task's fp32 partials go out through shared memory as contiguous runs
// (a member's group x D outputs are adjacent in its slot), 16-byte stores where the slot size allows.
#pragma once
#include <type_traits>

#include "../core/shared_image.h"
#include "decode_mma.cuh"
#include "decode_softmax.cuh"
#include "decode_vec.cuh"
#include "shared_launch.h"

// A/B switch for measurements of the native test only (nvcc -DPKV_SH_WIDE_TILES=1): warps of 16 rows
// at every head dim, a task of more than 64 rows in passes of 64, as before the 32-row warps.
#ifndef PKV_SH_WIDE_TILES
#define PKV_SH_WIDE_TILES 2
#endif
static_assert(PKV_SH_WIDE_TILES == 1 || PKV_SH_WIDE_TILES == 2, "row tiles per warp: 1 or 2");

namespace pkv {

template <int D>
struct ShKernelShape {
  static constexpr int kThreads = 128, kWarps = 4;
  static constexpr int kTile = D == 256 ? 32 : 64;  // tokens per stage: a multiple of 16 (PV's k)
  static constexpr int kKvElems = kTile * D;
  static constexpr size_t kStageBytes = (size_t)2 * kKvElems * 2;  // K and V of one tile
  static_assert(kTile * (D / 8) % kThreads == 0, "a tile's 16-byte chunks split evenly over the threads");
  static constexpr int kMaxParts = kTile / 16 < 4 ? kTile / 16 : 4;
  // Row tiles (of 16 rows) a warp holds on the wide path: two at D <= 128; at D 256 one, and a task of
  // more than 64 rows runs as passes of 64 rows (each pass reads the range again).
  static constexpr int kWideTiles = D <= 128 ? PKV_SH_WIDE_TILES : 1;
  static constexpr int kPassRows = kWarps * 16 * kWideTiles;
  static_assert(kShTileRows % kPassRows == 0, "a task is whole passes");
  // The narrow path (Q in registers) pipelines 3 stages; the wide one keeps Q (kPassRows x D) in shared
  // memory after its stages, with 3 stages where that fits in the same bytes, else 2.
  static constexpr int kNarrowStages = 3;
  static constexpr size_t kQBytes = kWideTiles == 2 ? (size_t)kPassRows * D * 2 : 0;
  static constexpr size_t kBudget = 96 * 1024;  // two blocks per SM on sm_90, and within sm_86/89's 99 KB
  static constexpr int kWideStages = 3 * kStageBytes + kQBytes <= kBudget ? 3 : 2;
  static constexpr size_t kNarrowBytes = kNarrowStages * kStageBytes, kWideBytes = kWideStages * kStageBytes + kQBytes;
  static constexpr size_t kSmemBytes = kNarrowBytes > kWideBytes ? kNarrowBytes : kWideBytes;
  static_assert(kSmemBytes <= kBudget, "the stages (and Q) fit the budget");
  // Epilogue, reusing the stages: each warp's rows of unnormalised outputs (fp32, padded rows), their
  // maxima and sums; then per pass row the parts' weights, the lse and the row's offset in the partials.
  static constexpr int kStateStride = D + 8;  // float2 stores of 8 rows x 8 floats: no bank conflict
  // A warp's state of RT row tiles is 16 RT rows x kStateStride outputs, then 16 RT maxima and 16 RT sums.
  static constexpr int kStatesFloats = kWarps * (16 * kWideTiles * kStateStride + 32 * kWideTiles);
  static constexpr size_t kEpilogueBytes = (size_t)(kStatesFloats + kPassRows * (kMaxParts + 1)) * 4 + (size_t)kPassRows * 8;
  static_assert(kEpilogueBytes <= kSmemBytes, "the epilogue fits in the K/V stages");
  static_assert((kStatesFloats + kPassRows * (kMaxParts + 1)) % 2 == 0, "row offsets 8-byte aligned");
};

// Element offset of 16-byte chunk `chunk` of row `row` in a K/V stage or the Q rows: chunk bits 0-2
// XOR the row's, so the 8 rows an ldmatrix reads at one logical chunk lie in 8 distinct bank groups (no
// conflict), as do a warp's cp.async writes of whole rows.
template <int D>
__device__ __forceinline__ int sh_chunk(int row, int chunk) { return row * D + ((chunk ^ (row & 7)) << 3); }

__device__ __forceinline__ uint32_t ldg_u32(const void *p) { return __ldg(static_cast<const unsigned int *>(p)); }

// S (RT x 16 query rows x N tokens, fp32 fragments) = Q K^T for the N K rows from row `first` (a
// multiple of 16) of the stage at sk; q_frag(kk, a) gives the RT row tiles' A fragments of k-step kk.
// Each K fragment serves the RT row tiles.
template <typename T, int D, int N, int RT, class QFrag>
__device__ __forceinline__ void sh_score_tile(float (&s)[RT][N / 8][4], QFrag q_frag, const T *sk, int first, int lane) {
  // ldmatrix lanes: row lane % 8 of matrix lane / 8, matrices (tokens 0-7 | 8-15) x (k lo | k hi).
  const int row = first + (lane >> 4) * 8 + (lane & 7), half = (lane >> 3) & 1;
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) {
    uint32_t a[RT][4];
    q_frag(kk, a);
#pragma unroll
    for (int jj = 0; jj < N / 16; jj++) {
      uint32_t b[4];
      ldmatrix_x4(b, sk + sh_chunk<D>(row + jj * 16, 2 * kk + half));
#pragma unroll
      for (int rt = 0; rt < RT; rt++) {
        MmaOp<T>::run(s[rt][2 * jj], a[rt], b[0], b[1]);
        MmaOp<T>::run(s[rt][2 * jj + 1], a[rt], b[2], b[3]);
      }
    }
  }
}

// O (RT x 16 rows x D, fp32 fragments) += P V for the N V rows from row `first` (a multiple of 16) of
// the stage at sv: P is s's probabilities, whose C fragments of two adjacent 8-token n-tiles are
// exactly one 16-token A fragment once packed to 16 bits. Each V fragment serves the RT row tiles.
template <typename T, int D, int N, int RT>
__device__ __forceinline__ void sh_accumulate_pv(float (&o)[RT][D / 8][4], const float (&s)[RT][N / 8][4], const T *sv,
                                                 int first, int lane) {
  // Transposed ldmatrix lanes: matrices (tokens 0-7 | 8-15) x (columns 0-7 | 8-15 of a 16-column step).
  const int row = first + ((lane >> 3) & 1) * 8 + (lane & 7), half = lane >> 4;
#pragma unroll
  for (int kk = 0; kk < N / 16; kk++) {
    uint32_t pa[RT][4];
#pragma unroll
    for (int rt = 0; rt < RT; rt++) {
      const float(&lo)[4] = s[rt][2 * kk], (&hi)[4] = s[rt][2 * kk + 1];
      pa[rt][0] = pack2<T>(lo[0], lo[1]), pa[rt][1] = pack2<T>(lo[2], lo[3]);
      pa[rt][2] = pack2<T>(hi[0], hi[1]), pa[rt][3] = pack2<T>(hi[2], hi[3]);
    }
#pragma unroll
    for (int dd = 0; dd < D / 16; dd++) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, sv + sh_chunk<D>(row + kk * 16, 2 * dd + half));
#pragma unroll
      for (int rt = 0; rt < RT; rt++) {
        MmaOp<T>::run(o[rt][2 * dd], pa[rt], b[0], b[1]);
        MmaOp<T>::run(o[rt][2 * dd + 1], pa[rt], b[2], b[3]);
      }
    }
  }
}

// One pass of a task: its rows [row_base, row_base + rows), rows <= 64 * RT. Warp w takes row group
// w / PARTS (RT x 16 rows) and token part w % PARTS of every tile. RT 2 keeps Q in shared memory, RT 1
// in registers.
template <typename T, int D, int RT, int PARTS>
__device__ __forceinline__ void sh_run_task(const ShParams &p, const ShTask &task, int row_base, int rows,
                                            unsigned char *smem) {
  using S = ShKernelShape<D>;
  constexpr int kTile = S::kTile, kChunks = D / 8, kN = kTile / PARTS, kWarpRows = 16 * RT;
  constexpr int kStages = RT == 2 ? S::kWideStages : S::kNarrowStages;
  constexpr int kStateFloats = kWarpRows * S::kStateStride + 2 * kWarpRows;  // as S::kStatesFloats
  // Tokens a warp scores at once: with two row tiles at D 128, S of 32 tokens is 32 registers beside O's
  // 128 (64 tokens spill); at D 64 O is half that and a whole part fits.
  constexpr int kStep = RT == 2 && D > 64 && kN > 32 ? 32 : kN;
  static_assert(kN % 16 == 0 && kN % kStep == 0, "a warp's part of a tile is whole PV k-steps");
  static_assert(RT == 1 || RT == S::kWideTiles, "the wide path's shared memory is sized for kWideTiles");
  T *skv = reinterpret_cast<T *>(smem);  // stage s: K at skv + 2 s kKvElems, V after it
  T *sq = skv + 2 * kStages * S::kKvElems;  // RT 2: the pass's Q rows, kPassRows x D
  const int g = p.group, hq = p.num_kv_heads * g;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int part = warp % PARTS, row_group = warp / PARTS;
  const bool active = row_group * kWarpRows < rows;
  const int page_size = 1 << p.page_shift;
  const int32_t *table = p.table + (int64_t)task.table_row * p.table_stride;
  const T *kbase = static_cast<const T *>(p.k), *vbase = static_cast<const T *>(p.v);
  const T *qbase = static_cast<const T *>(p.q);
  const ShMember *members = sh_members(p.image) + task.member_first;
  // Pass row r's query vector: member (row_base + r) / g, query head (row_base + r) % g of the group.
  auto q_row = [&](int r) {
    const int tr = row_base + r;
    return qbase + ((int64_t)members[tr / g].row * hq + (int64_t)task.head * g + tr % g) * D;
  };

  // One tile of K and V into `stage`; tokens past the range are zero-filled (finite scores, masked below).
  auto load_tile = [&](int stage, int tile_begin) {
    T *sk = skv + 2 * stage * S::kKvElems, *sv = sk + S::kKvElems;
#pragma unroll
    for (int k = 0; k < kTile * kChunks / S::kThreads; k++) {
      const int i = tid + k * S::kThreads, t = i / kChunks, c = i % kChunks, tok = tile_begin + t;
      const bool in = tok < task.kv_end;
      int64_t at = 0;
      if (in) {
        const int64_t page = __ldg(table + (tok >> p.page_shift));
        at = ((page * p.num_kv_heads + task.head) * page_size + (tok & (page_size - 1))) * D + c * 8;
      }
      cp_async16(sk + sh_chunk<D>(t, c), kbase + at, in ? 16 : 0);
      cp_async16(sv + sh_chunk<D>(t, c), vbase + at, in ? 16 : 0);
    }
  };

  const int ntiles = (task.kv_end - task.kv_begin + kTile - 1) / kTile;
  if constexpr (RT == 2) {  // Q rows into shared memory with the first tile's group (zero past the pass's rows)
    const int q_rows = (rows + kWarpRows - 1) / kWarpRows * kWarpRows;  // the active warps' rows
    for (int i = tid; i < q_rows * kChunks; i += S::kThreads) {
      const int r = i / kChunks, c = i % kChunks;
      cp_async16(sq + sh_chunk<D>(r, c), r < rows ? q_row(r) + c * 8 : qbase, r < rows ? 16 : 0);
    }
  }
#pragma unroll
  for (int s = 0; s < kStages - 1; s++) {
    if (s < ntiles) load_tile(s, task.kv_begin + s * kTile);
    cp_async_commit();
  }

  // RT 1: this thread's Q fragments (rows lane / 4 and lane / 4 + 8 of the warp's 16), zero past the rows.
  uint32_t qf[RT == 1 ? D / 16 : 1][4];
  if constexpr (RT == 1) {
    const T *qrow[2] = {nullptr, nullptr};
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int r = row_group * 16 + lane / 4 + 8 * h;
      if (r < rows) qrow[h] = q_row(r) + (lane & 3) * 2;
    }
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
      qf[kk][0] = qrow[0] ? ldg_u32(qrow[0] + kk * 16) : 0u;
      qf[kk][1] = qrow[1] ? ldg_u32(qrow[1] + kk * 16) : 0u;
      qf[kk][2] = qrow[0] ? ldg_u32(qrow[0] + kk * 16 + 8) : 0u;
      qf[kk][3] = qrow[1] ? ldg_u32(qrow[1] + kk * 16 + 8) : 0u;
    }
  }
  // The A fragments of k-step kk: from registers (RT 1) or by ldmatrix of the warp's Q rows (RT 2;
  // lanes: row lane % 8 of matrix lane / 8, matrices (rows 0-7 | 8-15) x (k lo | k hi)).
  const int q_lrow = row_group * kWarpRows + ((lane >> 3) & 1) * 8 + (lane & 7), q_half = lane >> 4;
  auto q_frag = [&](int kk, uint32_t (&a)[RT][4]) {
    if constexpr (RT == 1) {
#pragma unroll
      for (int e = 0; e < 4; e++) a[0][e] = qf[kk][e];
    } else {
#pragma unroll
      for (int rt = 0; rt < RT; rt++) ldmatrix_x4(a[rt], sq + sh_chunk<D>(q_lrow + rt * 16, 2 * kk + q_half));
    }
  };

  float o[RT][D / 8][4];
#pragma unroll
  for (int rt = 0; rt < RT; rt++)
#pragma unroll
    for (int n = 0; n < D / 8; n++) o[rt][n][0] = o[rt][n][1] = o[rt][n][2] = o[rt][n][3] = 0.f;
  float m[RT][2], l[RT][2];  // m: log2 domain (scaled)
#pragma unroll
  for (int rt = 0; rt < RT; rt++) m[rt][0] = m[rt][1] = -INFINITY, l[rt][0] = l[rt][1] = 0.f;
  const float scale = p.scale_log2;
  const int pb = part * kN;  // this warp's first token in each tile

  for (int it = 0; it < ntiles; it++) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    {
      const int next = it + kStages - 1;
      if (next < ntiles) load_tile(next % kStages, task.kv_begin + next * kTile);
      cp_async_commit();
    }
    if (!active) continue;
    const int tile_begin = task.kv_begin + it * kTile;
    const T *sk = skv + 2 * (it % kStages) * S::kKvElems, *sv = sk + S::kKvElems;

#pragma unroll 1
    for (int first = pb; first < pb + kN; first += kStep) {
      float s[RT][kStep / 8][4];
#pragma unroll
      for (int rt = 0; rt < RT; rt++)
#pragma unroll
        for (int j = 0; j < kStep / 8; j++) s[rt][j][0] = s[rt][j][1] = s[rt][j][2] = s[rt][j][3] = 0.f;
      sh_score_tile<T, D, kStep, RT>(s, q_frag, sk, first, lane);
      if (tile_begin + kTile > task.kv_end) {  // the range's last tile: no token at or past kv_end
#pragma unroll
        for (int rt = 0; rt < RT; rt++)
#pragma unroll
          for (int j = 0; j < kStep / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
              if (tile_begin + first + j * 8 + (lane & 3) * 2 + (e & 1) >= task.kv_end) s[rt][j][e] = -INFINITY;
      }
#pragma unroll
      for (int rt = 0; rt < RT; rt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          float mx = -INFINITY;
#pragma unroll
          for (int j = 0; j < kStep / 8; j++) mx = fmaxf(mx, fmaxf(s[rt][j][2 * h], s[rt][j][2 * h + 1]));
          const float m_new = fmaxf(m[rt][h], quad_max(mx) * scale);
          const float m_use = m_new == -INFINITY ? 0.f : m_new;  // a part that has seen no token yet: p = 0, not NaN
          const float alpha = fast_exp2(m[rt][h] - m_use);
          float sum = 0.f;
#pragma unroll
          for (int j = 0; j < kStep / 8; j++) {
            s[rt][j][2 * h] = fast_exp2(fmaf(s[rt][j][2 * h], scale, -m_use));
            s[rt][j][2 * h + 1] = fast_exp2(fmaf(s[rt][j][2 * h + 1], scale, -m_use));
            sum += s[rt][j][2 * h] + s[rt][j][2 * h + 1];
          }
          l[rt][h] = l[rt][h] * alpha + sum;  // this lane's columns; the quad's sum is taken once, at the end
          m[rt][h] = m_new;
          // Once the maxima settle (most steps of a long range) no row of the warp rescales: skip the FMULs.
          if (__any_sync(0xffffffffu, alpha != 1.f)) {
#pragma unroll
            for (int n = 0; n < D / 8; n++) o[rt][n][2 * h] *= alpha, o[rt][n][2 * h + 1] *= alpha;
          }
        }
      sh_accumulate_pv<T, D, kStep, RT>(o, s, sv, first, lane);
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with the stages and Q: the epilogue reuses them

  float *states = reinterpret_cast<float *>(smem);
  float *row_w = states + S::kStatesFloats;  // [row][part]: the part's weight over the row's sum
  float *row_lse = row_w + S::kPassRows * S::kMaxParts;
  int64_t *row_at = reinterpret_cast<int64_t *>(row_lse + S::kPassRows);  // the row's outputs in p.partial
  if (active) {
    float *st = states + warp * kStateFloats;
#pragma unroll
    for (int rt = 0; rt < RT; rt++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int r = rt * 16 + lane / 4 + 8 * h;
#pragma unroll
        for (int n = 0; n < D / 8; n++)
          *reinterpret_cast<float2 *>(st + r * S::kStateStride + n * 8 + (lane & 3) * 2) =
              make_float2(o[rt][n][2 * h], o[rt][n][2 * h + 1]);
        const float lsum = quad_sum(l[rt][h]);
        if ((lane & 3) == 0) st[kWarpRows * S::kStateStride + r] = m[rt][h], st[kWarpRows * S::kStateStride + kWarpRows + r] = lsum;
      }
  }
  const int64_t slot_floats = sh_slot_floats(g, D);
  // Pass row r of part q: the state of warp (r / kWarpRows) * PARTS + q, its row r % kWarpRows.
  auto state_of = [&](int r) { return states + (r / kWarpRows) * PARTS * kStateFloats; };
  __syncthreads();
  for (int r = tid; r < rows; r += S::kThreads) {
    const float *st0 = state_of(r) + kWarpRows * S::kStateStride + r % kWarpRows;
    float mx = -INFINITY;
#pragma unroll
    for (int q = 0; q < PARTS; q++) mx = fmaxf(mx, st0[q * kStateFloats]);
    float w[PARTS], sum = 0.f;
#pragma unroll
    for (int q = 0; q < PARTS; q++) {
      const float mq = st0[q * kStateFloats];
      w[q] = mq == -INFINITY ? 0.f : exp2f(mq - mx);  // a part that saw no token
      sum += w[q] * st0[q * kStateFloats + kWarpRows];
    }
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
#pragma unroll
    for (int q = 0; q < PARTS; q++) row_w[r * S::kMaxParts + q] = w[q] * inv;
    const int tr = row_base + r;
    const int64_t slot = members[tr / g].slot_base + (int64_t)task.piece * p.num_kv_heads + task.head;
    row_at[r] = slot * slot_floats + (int64_t)(tr % g) * D;
    p.partial[slot * slot_floats + (int64_t)g * D + tr % g] = sum > 0.f ? mx + __log2f(sum) : -INFINITY;
  }
  __syncthreads();
  // The outputs: 4 floats a thread where every row's run starts 16-byte aligned (slot size a multiple of
  // 4 floats), else one; consecutive threads write consecutive floats either way.
  auto store = [&](auto width) {
    constexpr int W = decltype(width)::value;
    using V = typename std::conditional<W == 4, float4, float>::type;
    for (int i = tid; i < rows * (D / W); i += S::kThreads) {
      const int r = i / (D / W), d = (i % (D / W)) * W;
      const float *st = state_of(r) + (r % kWarpRows) * S::kStateStride + d;
      float acc[W] = {};
#pragma unroll
      for (int q = 0; q < PARTS; q++) {
        const float wq = row_w[r * S::kMaxParts + q];
#pragma unroll
        for (int e = 0; e < W; e++) acc[e] = fmaf(wq, st[q * kStateFloats + e], acc[e]);
      }
      *reinterpret_cast<V *>(p.partial + row_at[r] + d) = *reinterpret_cast<const V *>(acc);
    }
  };
  if (slot_floats % 4 == 0)
    store(std::integral_constant<int, 4>());
  else
    store(std::integral_constant<int, 1>());
  __syncthreads();  // the next task's copies overwrite the epilogue's memory
}

// How the 4 warps divide `rows` (at most 64) query rows on the narrow path: ceil(rows / 16) row groups,
// each tile's tokens cut into parts so that every warp has work.
template <int D>
__device__ __forceinline__ int sh_parts(int rows) {
  const int groups = (rows + 15) / 16;
  const int parts = groups == 1 ? 4 : groups == 2 ? 2 : 1;
  return min(parts, ShKernelShape<D>::kMaxParts);
}

template <typename T, int D>
__device__ __forceinline__ void sh_run_narrow(const ShParams &p, const ShTask &task, int row_base, int rows,
                                              unsigned char *smem) {
  const int parts = sh_parts<D>(rows);
  if constexpr (ShKernelShape<D>::kMaxParts >= 4)
    if (parts == 4) return sh_run_task<T, D, 1, 4>(p, task, row_base, rows, smem);
  if constexpr (ShKernelShape<D>::kWideTiles == 2) {  // rows <= 32 here: 4 parts or (kMaxParts 2) 2
    sh_run_task<T, D, 1, 2>(p, task, row_base, rows, smem);
  } else {
    if (parts == 2) return sh_run_task<T, D, 1, 2>(p, task, row_base, rows, smem);
    sh_run_task<T, D, 1, 1>(p, task, row_base, rows, smem);
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(128, 2) shared_tasks_kernel(ShParams p) {
  using S = ShKernelShape<D>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  grid_launch_dependents();  // the step's decode kernel needs nothing of ours: it may take free SMs now
  const int num_tasks = sh_header(p.image).num_tasks;
  for (int t = blockIdx.x; t < num_tasks; t += gridDim.x) {
    const ShTask task = sh_tasks(p.image)[t];
    const int rows = task.member_count * p.group;
    if (rows <= 0 || rows > kShTileRows) continue;  // the planner never writes one (shared_plan.h checks)
    if constexpr (S::kWideTiles == 2) {
      // 33..128 rows: warps of 32 rows (two warps of a tile's halves up to 64 rows); fewer: the narrow path.
      if (rows > 64)
        sh_run_task<T, D, 2, 1>(p, task, 0, rows, smem_raw);
      else if (rows > 32)
        sh_run_task<T, D, 2, 2>(p, task, 0, rows, smem_raw);
      else
        sh_run_narrow<T, D>(p, task, 0, rows, smem_raw);
    } else {
      for (int base = 0; base < rows; base += S::kPassRows)
        sh_run_narrow<T, D>(p, task, base, min(S::kPassRows, rows - base), smem_raw);
    }
  }
}

}  // namespace pkv
