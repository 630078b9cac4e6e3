// The shared-prefix task kernel (shared_image.h): a fixed grid of 4-warp blocks striding over the
// section's tasks. A task is up to 64 query rows (members x group) of one KV head against a page range
// that all its members hold, so each K/V tile is read once for every row.
//
// The layout is FlashAttention-2's, for mma.sync m16n8k16 with fp32 accumulators:
// - each warp owns 16 query rows; their Q fragments are loaded from global memory once per task and
//   stay in registers (no shared-memory Q, no ldmatrix of Q per tile);
// - S = Q K^T and O += P V per tile, the P fragment of S reused as the A operand of PV in registers;
// - the online softmax keeps the maxima in the log2 domain with the scale folded into one FFMA before
//   exp2 (valid for scale_log2 >= 0, which the engine guarantees);
// - K/V tiles of kTile tokens stream through a 3-stage cp.async pipeline with one barrier per tile: the
//   barrier that makes tile i visible also proves every warp is done with tile i - 1, whose stage the
//   copy of tile i + 2 then takes. K/V rows are unpadded with their 16-byte chunks XOR-swizzled, so
//   3 stages are 96 KB at D = 128: two blocks per SM (8 warps) on sm_90, and it fits sm_86/89's 99 KB.
// With 32 query rows or fewer (a few forks: memory-bound like decode) a warp's 16 rows would leave
// warps idle, so the warps split each tile's tokens instead (PARTS 2 or 4) and their states meet by
// log-sum-exp in the epilogue. A task's fp32 partials go out through shared memory as contiguous runs
// (a member's group x D outputs are adjacent in its slot), 16-byte stores where the slot size allows.
#pragma once
#include <type_traits>

#include "../core/shared_image.h"
#include "decode_mma.cuh"
#include "decode_softmax.cuh"
#include "decode_vec.cuh"
#include "shared_launch.h"

namespace pkv {

template <int D>
struct ShKernelShape {
  static constexpr int kThreads = 128, kWarps = 4, kStages = 3;
  static constexpr int kTile = D == 256 ? 32 : 64;  // tokens per stage: a multiple of 16 (PV's k)
  // K/V rows unpadded, their 16-byte chunks swizzled (sh_chunk): 3 stages are 96 KB at D = 128 (two blocks
  // per SM on sm_90, and within the 99 KB a block may have on sm_86/89).
  static constexpr int kKvElems = kTile * D;
  static constexpr size_t kSmemBytes = (size_t)kStages * 2 * kKvElems * 2;
  static_assert(kTile * (D / 8) % kThreads == 0, "a tile's 16-byte chunks split evenly over the threads");
  static constexpr int kMaxParts = kTile / 16 < 4 ? kTile / 16 : 4;
  // Epilogue, reusing the stages: each warp's 16 rows of unnormalised outputs (fp32, padded rows), their
  // maxima and sums; then per task row the parts' weights, the lse and the row's offset in the partials.
  static constexpr int kStateStride = D + 8;  // float2 stores of 8 rows x 8 floats: no bank conflict
  static constexpr int kStateFloats = 16 * kStateStride + 32;
  static constexpr size_t kEpilogueBytes =
      (size_t)(kWarps * kStateFloats + kShTileRows * (kMaxParts + 1)) * 4 + (size_t)kShTileRows * 8;
  static_assert(kEpilogueBytes <= kSmemBytes, "the epilogue fits in the K/V stages");
  static_assert((kWarps * kStateFloats + kShTileRows * (kMaxParts + 1)) % 2 == 0, "row offsets 8-byte aligned");
};

// How the 4 warps divide a task of `rows` query rows: ceil(rows / 16) row groups, each tile's tokens cut
// into parts so that every warp has work.
template <int D>
__device__ __forceinline__ int sh_parts(int rows) {
  const int groups = (rows + 15) / 16;
  const int parts = groups == 1 ? 4 : groups == 2 ? 2 : 1;
  return min(parts, ShKernelShape<D>::kMaxParts);
}

// Element offset of 16-byte chunk `chunk` of row `row` in a K/V stage: chunk bits 0-2 XOR the row's,
// so the 8 rows an ldmatrix reads at one logical chunk lie in 8 distinct bank groups (no conflict), as
// do a warp's cp.async writes of whole rows.
template <int D>
__device__ __forceinline__ int sh_chunk(int row, int chunk) { return row * D + ((chunk ^ (row & 7)) << 3); }

__device__ __forceinline__ uint32_t ldg_u32(const void *p) { return __ldg(static_cast<const unsigned int *>(p)); }

// S (16 query rows x N tokens, fp32 fragments) = Q K^T for the N K rows from row `first` (a multiple of
// 16) of the stage at sk; q: the rows' A fragments.
template <typename T, int D, int N>
__device__ __forceinline__ void sh_score_tile(float (&s)[N / 8][4], const uint32_t (&q)[D / 16][4], const T *sk, int first,
                                              int lane) {
  // ldmatrix lanes: row lane % 8 of matrix lane / 8, matrices (tokens 0-7 | 8-15) x (k lo | k hi).
  const int row = first + (lane >> 4) * 8 + (lane & 7), half = (lane >> 3) & 1;
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) {
#pragma unroll
    for (int jj = 0; jj < N / 16; jj++) {
      uint32_t b[4];
      ldmatrix_x4(b, sk + sh_chunk<D>(row + jj * 16, 2 * kk + half));
      MmaOp<T>::run(s[2 * jj], q[kk], b[0], b[1]);
      MmaOp<T>::run(s[2 * jj + 1], q[kk], b[2], b[3]);
    }
  }
}

// O (16 rows x D, fp32 fragments) += P V for the N V rows from row `first` (a multiple of 16) of the
// stage at sv: P is s's probabilities, whose C fragments of two adjacent 8-token n-tiles are exactly
// one 16-token A fragment once packed to 16 bits.
template <typename T, int D, int N>
__device__ __forceinline__ void sh_accumulate_pv(float (&o)[D / 8][4], const float (&s)[N / 8][4], const T *sv, int first,
                                                 int lane) {
  // Transposed ldmatrix lanes: matrices (tokens 0-7 | 8-15) x (columns 0-7 | 8-15 of a 16-column step).
  const int row = first + ((lane >> 3) & 1) * 8 + (lane & 7), half = lane >> 4;
#pragma unroll
  for (int kk = 0; kk < N / 16; kk++) {
    const float(&lo)[4] = s[2 * kk], (&hi)[4] = s[2 * kk + 1];
    const uint32_t p[4] = {pack2<T>(lo[0], lo[1]), pack2<T>(lo[2], lo[3]), pack2<T>(hi[0], hi[1]), pack2<T>(hi[2], hi[3])};
#pragma unroll
    for (int dd = 0; dd < D / 16; dd++) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, sv + sh_chunk<D>(row + kk * 16, 2 * dd + half));
      MmaOp<T>::run(o[2 * dd], p, b[0], b[1]);
      MmaOp<T>::run(o[2 * dd + 1], p, b[2], b[3]);
    }
  }
}

// One task. Warp w takes row group w / PARTS and token part w % PARTS of every tile.
template <typename T, int D, int PARTS>
__device__ __forceinline__ void sh_run_task(const ShParams &p, const ShTask &task, unsigned char *smem) {
  using S = ShKernelShape<D>;
  constexpr int kTile = S::kTile, kChunks = D / 8, kN = kTile / PARTS;
  static_assert(kN % 16 == 0, "a warp's part of a tile is whole PV k-steps");
  T *skv = reinterpret_cast<T *>(smem);  // stage s: K at skv + 2 s kKvElems, V after it
  const int g = p.group, hq = p.num_kv_heads * g, rows = task.member_count * g;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int part = warp % PARTS, row_group = warp / PARTS;
  const bool active = row_group * 16 < rows;
  const int page_size = 1 << p.page_shift;
  const int32_t *table = p.table + (int64_t)task.table_row * p.table_stride;
  const T *kbase = static_cast<const T *>(p.k), *vbase = static_cast<const T *>(p.v);
  const ShMember *members = sh_members(p.image) + task.member_first;

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
#pragma unroll
  for (int s = 0; s < S::kStages - 1; s++) {
    if (s < ntiles) load_tile(s, task.kv_begin + s * kTile);
    cp_async_commit();
  }

  // This thread's Q fragments (rows lane / 4 and lane / 4 + 8 of the warp's 16), zero past the task's rows.
  uint32_t qf[D / 16][4];
  {
    const T *qrow[2] = {nullptr, nullptr};
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int r = row_group * 16 + lane / 4 + 8 * h;
      if (r < rows) {
        const int64_t b = members[r / g].row;
        qrow[h] = static_cast<const T *>(p.q) + (b * hq + (int64_t)task.head * g + r % g) * D + (lane & 3) * 2;
      }
    }
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
      qf[kk][0] = qrow[0] ? ldg_u32(qrow[0] + kk * 16) : 0u;
      qf[kk][1] = qrow[1] ? ldg_u32(qrow[1] + kk * 16) : 0u;
      qf[kk][2] = qrow[0] ? ldg_u32(qrow[0] + kk * 16 + 8) : 0u;
      qf[kk][3] = qrow[1] ? ldg_u32(qrow[1] + kk * 16 + 8) : 0u;
    }
  }

  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // m: log2 domain (scaled)
  const float scale = p.scale_log2;
  const int pb = part * kN;  // this warp's first token in each tile

  for (int it = 0; it < ntiles; it++) {
    cp_async_wait<S::kStages - 2>();
    __syncthreads();
    {
      const int next = it + S::kStages - 1;
      if (next < ntiles) load_tile(next % S::kStages, task.kv_begin + next * kTile);
      cp_async_commit();
    }
    if (!active) continue;
    const int tile_begin = task.kv_begin + it * kTile;
    const T *sk = skv + 2 * (it % S::kStages) * S::kKvElems, *sv = sk + S::kKvElems;

    float s[kN / 8][4];
#pragma unroll
    for (int j = 0; j < kN / 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
    sh_score_tile<T, D, kN>(s, qf, sk, pb, lane);
    if (tile_begin + kTile > task.kv_end) {  // the range's last tile: no token at or past kv_end
#pragma unroll
      for (int j = 0; j < kN / 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++)
          if (tile_begin + pb + j * 8 + (lane & 3) * 2 + (e & 1) >= task.kv_end) s[j][e] = -INFINITY;
    }
#pragma unroll
    for (int h = 0; h < 2; h++) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < kN / 8; j++) mx = fmaxf(mx, fmaxf(s[j][2 * h], s[j][2 * h + 1]));
      const float m_new = fmaxf(m[h], quad_max(mx) * scale);
      const float m_use = m_new == -INFINITY ? 0.f : m_new;  // a part that has seen no token yet: p = 0, not NaN
      const float alpha = exp2f(m[h] - m_use);
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < kN / 8; j++) {
        s[j][2 * h] = exp2f(fmaf(s[j][2 * h], scale, -m_use));
        s[j][2 * h + 1] = exp2f(fmaf(s[j][2 * h + 1], scale, -m_use));
        sum += s[j][2 * h] + s[j][2 * h + 1];
      }
      l[h] = l[h] * alpha + sum;  // this lane's columns; the quad's sum is taken once, at the end
      m[h] = m_new;
#pragma unroll
      for (int n = 0; n < D / 8; n++) o[n][2 * h] *= alpha, o[n][2 * h + 1] *= alpha;
    }
    sh_accumulate_pv<T, D, kN>(o, s, sv, pb, lane);
  }
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with the stages: the epilogue reuses them

  float *states = reinterpret_cast<float *>(smem);
  float *row_w = states + S::kWarps * S::kStateFloats;  // [row][part]: the part's weight over the row's sum
  float *row_lse = row_w + kShTileRows * S::kMaxParts;
  int64_t *row_at = reinterpret_cast<int64_t *>(row_lse + kShTileRows);  // the row's outputs in p.partial
  if (active) {
    float *st = states + warp * S::kStateFloats;
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int r = lane / 4 + 8 * h;
#pragma unroll
      for (int n = 0; n < D / 8; n++)
        *reinterpret_cast<float2 *>(st + r * S::kStateStride + n * 8 + (lane & 3) * 2) = make_float2(o[n][2 * h], o[n][2 * h + 1]);
      const float lsum = quad_sum(l[h]);
      if ((lane & 3) == 0) st[16 * S::kStateStride + r] = m[h], st[16 * S::kStateStride + 16 + r] = lsum;
    }
  }
  const int64_t slot_floats = sh_slot_floats(g, D);
  __syncthreads();
  for (int r = tid; r < rows; r += S::kThreads) {
    const float *st0 = states + (r / 16) * PARTS * S::kStateFloats + 16 * S::kStateStride + r % 16;
    float mx = -INFINITY;
#pragma unroll
    for (int q = 0; q < PARTS; q++) mx = fmaxf(mx, st0[q * S::kStateFloats]);
    float w[PARTS], sum = 0.f;
#pragma unroll
    for (int q = 0; q < PARTS; q++) {
      const float mq = st0[q * S::kStateFloats];
      w[q] = mq == -INFINITY ? 0.f : exp2f(mq - mx);  // a part that saw no token
      sum += w[q] * st0[q * S::kStateFloats + 16];
    }
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
#pragma unroll
    for (int q = 0; q < PARTS; q++) row_w[r * S::kMaxParts + q] = w[q] * inv;
    const int64_t slot = members[r / g].slot_base + (int64_t)task.piece * p.num_kv_heads + task.head;
    row_at[r] = slot * slot_floats + (int64_t)(r % g) * D;
    p.partial[slot * slot_floats + (int64_t)g * D + r % g] = sum > 0.f ? mx + __log2f(sum) : -INFINITY;
  }
  __syncthreads();
  // The outputs: 4 floats a thread where every row's run starts 16-byte aligned (slot size a multiple of
  // 4 floats), else one; consecutive threads write consecutive floats either way.
  auto store = [&](auto width) {
    constexpr int W = decltype(width)::value;
    using V = typename std::conditional<W == 4, float4, float>::type;
    for (int i = tid; i < rows * (D / W); i += S::kThreads) {
      const int r = i / (D / W), d = (i % (D / W)) * W;
      const float *st = states + ((r / 16) * PARTS) * S::kStateFloats + (r % 16) * S::kStateStride + d;
      float acc[W] = {};
#pragma unroll
      for (int q = 0; q < PARTS; q++) {
        const float wq = row_w[r * S::kMaxParts + q];
#pragma unroll
        for (int e = 0; e < W; e++) acc[e] = fmaf(wq, st[q * S::kStateFloats + e], acc[e]);
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

template <typename T, int D>
__global__ void __launch_bounds__(128, 2) shared_tasks_kernel(ShParams p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int num_tasks = sh_header(p.image).num_tasks;
  for (int t = blockIdx.x; t < num_tasks; t += gridDim.x) {
    const ShTask task = sh_tasks(p.image)[t];
    const int rows = task.member_count * p.group;
    if (rows <= 0 || rows > kShTileRows) continue;  // the planner never writes one (shared_plan.h checks)
    const int parts = sh_parts<D>(rows);
    if constexpr (ShKernelShape<D>::kMaxParts >= 4)
      if (parts == 4) {
        sh_run_task<T, D, 4>(p, task, smem_raw);
        continue;
      }
    if (parts == 2)
      sh_run_task<T, D, 2>(p, task, smem_raw);
    else
      sh_run_task<T, D, 1>(p, task, smem_raw);
  }
}

}  // namespace pkv
