// Task body on tensor cores over FP8 pages (head dim 64 and 128): the tensor-core body's plan (the group's
// query heads are the 16 rows of mma.m16n8k16 tiles, four warps take 16-token chunks in turn, online
// softmax on the fragments) with f16 operands made in registers from e4m3 codes, one cvt per pair (exact):
// - S = Q K^T: the dot product does not care in which order it sums the head dim, so lane (r0, cq) owns
//   the contiguous quarter cq of every K row and Q's fragments are loaded in that same order: its B
//   fragments are 16-byte shared loads of codes, no transpose. A token's K scale multiplies its scores.
// - O += P V: O's columns may be any permutation of the head dim too, so lane r0 owns the contiguous
//   eighth r0 of every V row; byte permutes pair up its two tokens' codes, a cvt makes each B register.
//   P carries each token's V scale divided by the largest V scale the warp has seen (so P stays within
//   f16's range, at most 1 as without scales), and O is kept relative to that largest scale: when a chunk
//   raises it, O is rescaled together with the softmax rescale, at no extra cost per element.
// bf16 queries are scaled per query head by a power of two into f16's range (exact), undone on the score.
// Groups of up to 8 heads swap the roles (run_heads_as_n): heads as the mma's columns, tokens as its rows.
// Stages come by cp.async into swizzled rows, or (head dim 128, sm_90+) by bulk copies into padded groups of
// rows that tok_row reads in a bank-spreading order (Fp8BulkTileLoader).
#pragma once
#include <cuda_fp8.h>

#include <type_traits>

#include "../core/plan_image.h"
#include "decode_launch.h"
#include "decode_merge.cuh"
#include "decode_mma.cuh"
#include "decode_pipeline.cuh"
#include "decode_softmax.cuh"
#include "decode_tile_fp8.cuh"

namespace pkv {

// The two e4m3 codes (low byte first) in half `h` of `codes` (0: bits 0-15, 1: bits 16-31) to the f16x2
// register of an mma operand, exactly. On sm_89+ the half is named in PTX, so that ptxas can read it in
// place rather than shift it down first.
__device__ __forceinline__ uint32_t fp8x2_to_f16x2(uint32_t codes, int h = 0) {
#if __CUDA_ARCH__ >= 890
  uint32_t r;
  if (h) asm("{\n.reg .b16 lo, hi;\nmov.b32 {lo, hi}, %1;\ncvt.rn.f16x2.e4m3x2 %0, hi;\n}\n" : "=r"(r) : "r"(codes));
  else asm("{\n.reg .b16 lo, hi;\nmov.b32 {lo, hi}, %1;\ncvt.rn.f16x2.e4m3x2 %0, lo;\n}\n" : "=r"(r) : "r"(codes));
  return r;
#else
  const __half2_raw pair = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)((codes >> (16 * h)) & 0xffffu), __NV_E4M3);
  return (uint32_t)pair.x | ((uint32_t)pair.y << 16);
#endif
}
__device__ __forceinline__ uint32_t byte_perm(uint32_t a, uint32_t b, uint32_t selector) {
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(selector));
  return r;
}

// Q's A fragments as f16: f16 queries as they are; bf16 queries times 2^-e per query head, e chosen so the
// head's largest |q| lands in [2^14, 2^15) (f16's top binade: no overflow, nothing that matters underflows).
// factor[i] undoes it on the scores of row r0 + 8 i.
template <typename Q, int kKSteps>
__device__ __forceinline__ void fp8_query_fragments(uint32_t (&qa)[kKSteps][4], float (&factor)[2]) {
  factor[0] = factor[1] = 1.f;
  if constexpr (std::is_same<Q, __nv_bfloat16>::value) {
    float mx[2] = {0.f, 0.f};
#pragma unroll
    for (int ks = 0; ks < kKSteps; ks++)
#pragma unroll
      for (int r = 0; r < 4; r++) {
        const float2 v = Pair<Q>::to_float2(*reinterpret_cast<const __nv_bfloat162 *>(&qa[ks][r]));
        mx[r & 1] = fmaxf(mx[r & 1], fmaxf(fabsf(v.x), fabsf(v.y)));  // registers 0, 2: row r0; 1, 3: r0 + 8
      }
    float down[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
      mx[i] = quad_max(mx[i]);
      const int e = mx[i] > 0.f ? ilogbf(mx[i]) - 14 : 0;
      down[i] = ldexpf(1.f, -e);
      factor[i] = ldexpf(1.f, e);
    }
#pragma unroll
    for (int ks = 0; ks < kKSteps; ks++)
#pragma unroll
      for (int r = 0; r < 4; r++) {
        const float2 v = Pair<Q>::to_float2(*reinterpret_cast<const __nv_bfloat162 *>(&qa[ks][r]));
        qa[ks][r] = pack2<__half>(v.x * down[r & 1], v.y * down[r & 1]);
      }
  }
}

// kBulk: stages come by Hopper bulk copies (Fp8BulkTileLoader, head dim 128 on sm_90+), else by cp.async.
template <typename Q, int D, bool kBulk = false>
struct Fp8TensorBody {
  using Smem = uint8_t;
  static constexpr int kThreads = 128;
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kTile = fp8_tensor_tile_tokens(D);
  static constexpr int kChunks = kTile / 16;
  static constexpr int kKSteps = D / 16;  // k-steps of Q K^T
  static constexpr int kNTiles = D / 8;   // n-tiles of O
  static constexpr int kKBytes = D / 4;   // codes of a K row one lane reads (its quarter)
  static constexpr int kVBytes = D / 8;   // codes of a V row one lane reads (its eighth)
  using Loader = std::conditional_t<kBulk, Fp8BulkTileLoader<D, kThreads, kTile>, Fp8TileLoader<D, kThreads, kTile, true>>;
  static constexpr int kStageElems = Loader::kStageElems;
  static constexpr size_t kSmemBytes = kDecodeStages * (size_t)kStageElems;
  static_assert(D == 64 || D == 128, "FP8 tensor-core body: head dim 64 or 128");
  static_assert(kWarps * 16 * (D + 1) * sizeof(float) <= kSmemBytes, "merge scratch fits");
  static_assert(!kBulk || (D == 128 && kTile % 64 == 0), "grouped rows: head dim 128, chunks from 64-token blocks");

  // The stage row of token t (0-15) of chunk j. cp.async: rows in order. Bulk copies (rows in padded groups
  // of 8, no swizzle): chunk j takes rows 2 (j % 4) and 2 (j % 4) + 1 of each of the 8 groups of its 64-token
  // block, token t from group t % 8, so the lanes that read the same column of different tokens together
  // read different groups, whose padding puts them in different banks. A chunk's token 0 is its first row,
  // and first rows grow with j.
  static __device__ __forceinline__ int tok_row(int j, int t) {
    if constexpr (kBulk) return (j >> 2) * 64 + (t & 7) * 8 + 2 * (j & 3) + (t >> 3);
    else return j * 16 + t;
  }
  // Warp w takes chunks w, w + 4, ...: its chunk i holds the rows of its first chunk moved by 64 i, in both
  // layouts, and a stage half's bytes from row 64 i on are those from row 0 moved by kBlockBytes i (whole
  // groups, or rows whose swizzle repeats every 8). So a lane's row and byte offsets are computed once per
  // task, and each chunk adds one base.
  static_assert(kWarps == 4, "chunk i of warp w is chunk w + 4 i");
  static constexpr int block_bytes() {
    if constexpr (kBulk) return 8 * Loader::kGroupStride;  // Loader::at(64, 0)
    else return 64 * D;
  }
  static constexpr int kBlockBytes = block_bytes();
  static __device__ __forceinline__ int lane_row(int t) { return tok_row(threadIdx.x >> 5, t); }

  // kBytes consecutive codes of a row from byte `from` (a multiple of kBytes), as words.
  template <int kBytes>
  static __device__ __forceinline__ void load_codes(const uint8_t *half, int row, int from, uint32_t (&w)[kBytes / 4]) {
    if constexpr (kBytes >= 16) {
#pragma unroll
      for (int c = 0; c < kBytes / 16; c++) {
        const uint4 v = *reinterpret_cast<const uint4 *>(half + Loader::at(row, from / 16 + c));
        w[4 * c] = v.x, w[4 * c + 1] = v.y, w[4 * c + 2] = v.z, w[4 * c + 3] = v.w;
      }
    } else if constexpr (kBytes == 8) {
      const uint2 v = *reinterpret_cast<const uint2 *>(half + Loader::at(row, from / 16) + from % 16);
      w[0] = v.x, w[1] = v.y;
    } else {
      static_assert(kBytes == 4, "whole words");
      w[0] = *reinterpret_cast<const uint32_t *>(half + Loader::at(row, from / 16) + from % 16);
    }
  }

  // The V reference moves up to a chunk's largest V scale (vmax, the same in every lane) and v_unit (P's
  // factor) to 1 / it; returns what the output (relative to the old reference) is multiplied by. Once the
  // largest scale is seen the reference stays, and the reciprocal is not taken again.
  static __device__ __forceinline__ float move_v_reference(float &v_ref, float &v_unit, float vmax) {
    if (vmax <= v_ref) return 1.f;
    const float o_adj = v_ref / vmax;
    v_ref = vmax;
    v_unit = 1.f / vmax;
    return o_adj;
  }
  // Element e of every output fragment times f[e]. Once the maxima settle most chunks change neither
  // max nor reference: the multiplies by 1 are skipped (warp-uniform; a multiply by 1 is exact).
  template <int N>
  static __device__ __forceinline__ void rescale_output(float (&o)[N][4], const float (&f)[4]) {
    if (!__any_sync(0xffffffffu, f[0] != 1.f || f[1] != 1.f || f[2] != 1.f || f[3] != 1.f)) return;
#pragma unroll
    for (int n = 0; n < N; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) o[n][e] *= f[e];
  }

  // Groups of up to 8 query heads take the narrow form (heads_as_n); larger ones the 16-row form below.
  static __device__ void run(const DecodeParams &p, const PlanTask task, uint8_t *smem) {
    if (p.group <= 8) run_heads_as_n(p, task, smem);
    else run_heads_as_m(p, task, smem);
  }

  // The group's heads as the 16 rows (M) of the mma tiles, tokens as N: S = Q K^T, O += P V.
  static __device__ void run_heads_as_m(const DecodeParams &p, const PlanTask task, uint8_t *smem) {
    const PlanRow row = plan_rows(p.plan)[task.row];
    const int head = task_head(task), split = task_split(task);
    const int g = p.group;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, r0 = lane >> 2, cq = lane & 3;

    // Q's A fragments in the K rows' order: fragment columns 2cq, 2cq + 1 (+8, +9) of k-step ks are
    // head-dim elements cq * kKBytes + 4 ks + 0, 1 (+2, +3).
    const Q *qbase = static_cast<const Q *>(p.q) + ((int64_t)task.row * p.num_kv_heads + head) * g * D;
    uint32_t qa[kKSteps][4];
#pragma unroll
    for (int ks = 0; ks < kKSteps; ks++) {
      const int c = cq * kKBytes + 4 * ks;
      qa[ks][0] = r0 < g ? *reinterpret_cast<const uint32_t *>(qbase + r0 * D + c) : 0u;
      qa[ks][1] = r0 + 8 < g ? *reinterpret_cast<const uint32_t *>(qbase + (r0 + 8) * D + c) : 0u;
      qa[ks][2] = r0 < g ? *reinterpret_cast<const uint32_t *>(qbase + r0 * D + c + 2) : 0u;
      qa[ks][3] = r0 + 8 < g ? *reinterpret_cast<const uint32_t *>(qbase + (r0 + 8) * D + c + 2) : 0u;
    }
    float row_factor[2];
    fp8_query_fragments<Q, kKSteps>(qa, row_factor);
#pragma unroll
    for (int i = 0; i < 2; i++) row_factor[i] *= p.scale_log2;

    float o[kNTiles][4];
#pragma unroll
    for (int n = 0; n < kNTiles; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // rows r0 and r0 + 8; l is this lane's share
    float v_ref = 0.f, v_unit = 0.f;  // the largest V scale of the warp's tokens so far (o holds O / v_ref), 1 / it

    __shared__ int claim_ring[TileSchedule::kRing];
    const TaskTiles tiles = task_tiles<kTile>(p, task, row, head, claim_ring);
    const Loader loader = Loader::of(p, row, tiles, head);
    auto tile_math = [&](int, const uint8_t *ks_, const uint8_t *vs_, int valid) {
      const float *k_scale = Loader::scales(ks_), *v_scale = Loader::scales(vs_);
      for (int i = 0; warp + kWarps * i < kChunks; i++) {
        const int left = valid - 64 * i;  // rows of this chunk past it are masked
        if (lane_row(0) >= left) break;
        const uint8_t *kc = ks_ + i * kBlockBytes, *vc_ = vs_ + i * kBlockBytes;
        const float *k_sc = k_scale + 64 * i, *v_sc = v_scale + 64 * i;
        float s[2][4] = {};
#pragma unroll
        for (int nt = 0; nt < 2; nt++) {
          uint32_t kw[kKSteps];  // word ks: the codes of this lane's k-step ks of chunk token 8 nt + r0
          load_codes<kKBytes>(kc, lane_row(8 * nt + r0), cq * kKBytes, kw);
#pragma unroll
          for (int ks = 0; ks < kKSteps; ks++)
            MmaOp<__half>::run(s[nt], qa[ks], fp8x2_to_f16x2(kw[ks]), fp8x2_to_f16x2(kw[ks], 1));
        }
        float mx[2] = {-INFINITY, -INFINITY}, vmax = 0.f;
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int tok = lane_row(8 * nt + cq * 2 + (e & 1));
            s[nt][e] = tok < left ? s[nt][e] * (row_factor[e >> 1] * k_sc[tok]) : -INFINITY;
            mx[e >> 1] = fmaxf(mx[e >> 1], s[nt][e]);
            vmax = fmaxf(vmax, v_sc[tok]);  // masked rows' scales are zero
          }
        float sc[2];
        fragment_rescale(
            mx, m, l, sc, [](float x) { return quad_max(x); }, [](float x) { return fast_exp2(x); });
        vmax = quad_max(vmax);
        const float o_adj = move_v_reference(v_ref, v_unit, vmax);
        rescale_output(o, {sc[0] * o_adj, sc[0] * o_adj, sc[1] * o_adj, sc[1] * o_adj});  // rows are heads
        float pr[2][4];
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int tok = lane_row(8 * nt + cq * 2 + (e & 1));
            const float pe = fast_exp2(s[nt][e] - m[e >> 1]);
            l[e >> 1] += pe;
            pr[nt][e] = pe * (v_sc[tok] * v_unit);
          }
        // The S fragments of tokens 0-7 and 8-15 are P's A fragment for k = 16 tokens.
        const uint32_t pa[4] = {pack2<__half>(pr[0][0], pr[0][1]), pack2<__half>(pr[0][2], pr[0][3]),
                                pack2<__half>(pr[1][0], pr[1][1]), pack2<__half>(pr[1][2], pr[1][3])};
        // V codes of the lane's eighth of tokens 2cq, 2cq + 1 (k rows of b0) and 2cq + 8, 2cq + 9 (b1).
        uint32_t va[kVBytes / 4], vb[kVBytes / 4], vc[kVBytes / 4], vd[kVBytes / 4];
        load_codes<kVBytes>(vc_, lane_row(2 * cq), r0 * kVBytes, va);
        load_codes<kVBytes>(vc_, lane_row(2 * cq + 1), r0 * kVBytes, vb);
        load_codes<kVBytes>(vc_, lane_row(2 * cq + 8), r0 * kVBytes, vc);
        load_codes<kVBytes>(vc_, lane_row(2 * cq + 9), r0 * kVBytes, vd);
#pragma unroll
        for (int w = 0; w < kVBytes / 4; w++) {
          // Bytes of n-tiles 4w .. 4w + 3, each pair (token 2cq, token 2cq + 1) in one 16-bit half.
          const uint32_t b0[2] = {byte_perm(va[w], vb[w], 0x5140), byte_perm(va[w], vb[w], 0x7362)};
          const uint32_t b1[2] = {byte_perm(vc[w], vd[w], 0x5140), byte_perm(vc[w], vd[w], 0x7362)};
#pragma unroll
          for (int q4 = 0; q4 < 4; q4++) {
            MmaOp<__half>::run(o[4 * w + q4], pa, fp8x2_to_f16x2(b0[q4 >> 1], q4 & 1), fp8x2_to_f16x2(b1[q4 >> 1], q4 & 1));
          }
        }
      }
    };
    const int done = stream_task_tiles(loader, tiles.sched, smem, tile_math);

    // Each warp's state into the reused pipeline memory (O's column c of n-tile n is head-dim element
    // c * kNTiles + n), then the shared epilogue merges the warps.
    float *sm_lse = reinterpret_cast<float *>(smem);
    float *sm_o = sm_lse + kWarps * 16;
#pragma unroll
    for (int i = 0; i < 2; i++) {
      l[i] = quad_sum(l[i]);
      const int y = r0 + 8 * i;
      if (y >= g) continue;
      const float inv = l[i] > 0.f ? v_ref / l[i] : 0.f;  // o holds O / v_ref
      float *dst = sm_o + (warp * g + y) * D;
#pragma unroll
      for (int n = 0; n < kNTiles; n++) {
        dst[(2 * cq) * kNTiles + n] = o[n][2 * i] * inv;
        dst[(2 * cq + 1) * kNTiles + n] = o[n][2 * i + 1] * inv;
      }
      if (cq == 0) sm_lse[warp * g + y] = l[i] > 0.f ? m[i] + __log2f(l[i]) : -INFINITY;
    }
    __syncthreads();
    write_task_output<Q, D, kThreads, kSmemBytes>(p, task.row, head, split, row, sm_lse, sm_o, kWarps, sm_lse,
                                                  tiles.sched.cursor ? done : -1, tiles.sched.ntiles);
    __syncthreads();  // the next task's prologue reuses this memory
  }

  // Up to 8 heads as the 8 columns (N) of the mma tiles and 16 tokens as its rows (M): S^T = K Q^T, then
  // O^T += V^T P^T, so half the mma of the 16-row form and none on padding rows. K's rows are the A
  // fragments (each lane's quarter of tokens r0 and r0 + 8), Q^T the B fragments; P^T's B fragments are
  // the S^T fragments transposed in registers (movmatrix); V^T's A fragments pair the codes of tokens
  // 2cq, 2cq + 1 (and + 8) of the lane's two head-dim spans: O^T's row i of m-tile mt is element
  // i * kMTiles + mt.
  static constexpr int kMTiles = D / 16;  // m-tiles of O^T
  static constexpr int kSpan = D / 16;    // codes of a V row in each of a lane's two spans

  static __device__ __forceinline__ uint32_t transpose8x8(uint32_t x) {
    uint32_t r;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(r) : "r"(x));
    return r;
  }
  // Max and sum over the 8 lanes that hold one head's column (same lane % 4).
  static __device__ __forceinline__ float column_max(float x) {
#pragma unroll
    for (int off = 4; off < 32; off *= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, off));
    return x;
  }
  static __device__ __forceinline__ float column_sum(float x) {
#pragma unroll
    for (int off = 4; off < 32; off *= 2) x += __shfl_xor_sync(0xffffffffu, x, off);
    return x;
  }

  static __device__ void run_heads_as_n(const DecodeParams &p, const PlanTask task, uint8_t *smem) {
    const PlanRow row = plan_rows(p.plan)[task.row];
    const int head = task_head(task), split = task_split(task);
    const int g = p.group;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, r0 = lane >> 2, cq = lane & 3;

    // Q^T's B fragments: head r0, head-dim elements cq * kKBytes + 4 ks + 0, 1 (b0) and + 2, 3 (b1).
    const Q *qbase = static_cast<const Q *>(p.q) + ((int64_t)task.row * p.num_kv_heads + head) * g * D;
    uint32_t qf[kKSteps][4];  // the 16-row form's layout with rows r0 + 8 empty, for fp8_query_fragments
#pragma unroll
    for (int ks = 0; ks < kKSteps; ks++) {
      const int c = cq * kKBytes + 4 * ks;
      qf[ks][0] = r0 < g ? *reinterpret_cast<const uint32_t *>(qbase + r0 * D + c) : 0u;
      qf[ks][2] = r0 < g ? *reinterpret_cast<const uint32_t *>(qbase + r0 * D + c + 2) : 0u;
      qf[ks][1] = qf[ks][3] = 0u;
    }
    float factor[2];
    fp8_query_fragments<Q, kKSteps>(qf, factor);
    // The scores of column 2cq + c belong to head 2cq + c, whose factor its own quad computed.
    float head_factor[2];
#pragma unroll
    for (int c = 0; c < 2; c++) head_factor[c] = __shfl_sync(0xffffffffu, factor[0], (2 * cq + c) * 4) * p.scale_log2;

    float o[kMTiles][4];  // O^T rows r0, r0 + 8 of each m-tile; columns (heads) 2cq, 2cq + 1
#pragma unroll
    for (int n = 0; n < kMTiles; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // heads 2cq, 2cq + 1; l is this lane's share
    float v_ref = 0.f, v_unit = 0.f;

    __shared__ int claim_ring[TileSchedule::kRing];
    const TaskTiles tiles = task_tiles<kTile>(p, task, row, head, claim_ring);
    const Loader loader = Loader::of(p, row, tiles, head);
    // The warp's chunks of a tile (kPerWarp of them) take one softmax step together: their scores first,
    // then one max, rescale and V-reference move for all, then P V chunk by chunk.
    constexpr int kPerWarp = kChunks / kWarps;
    static_assert(kChunks % kWarps == 0, "every warp has the same number of chunks in a tile");
    auto tile_math = [&](int, const uint8_t *ks_, const uint8_t *vs_, int valid) {
      const float *k_scale = Loader::scales(ks_), *v_scale = Loader::scales(vs_);
      int chunks = 0;  // the warp's chunks that hold a valid row (warp-uniform; they come first)
#pragma unroll
      for (int i = 0; i < kPerWarp; i++) chunks += lane_row(0) + 64 * i < valid;
      if (chunks == 0) return;
      float s[kPerWarp][4];  // S^T of chunk i: tokens r0 (s[i][0], s[i][1]) and r0 + 8, heads 2cq, 2cq + 1
      float mx[2] = {-INFINITY, -INFINITY}, vmax = 0.f;
#pragma unroll
      for (int i = 0; i < kPerWarp; i++) {
        const uint8_t *kc = ks_ + i * kBlockBytes;
        const float *k_sc = k_scale + 64 * i, *v_sc = v_scale + 64 * i;
        s[i][0] = s[i][1] = s[i][2] = s[i][3] = -INFINITY;
        if (i >= chunks) continue;
        uint32_t kw0[kKSteps], kw1[kKSteps];
        load_codes<kKBytes>(kc, lane_row(r0), cq * kKBytes, kw0);
        load_codes<kKBytes>(kc, lane_row(r0 + 8), cq * kKBytes, kw1);
        // Two accumulators, even and odd k-steps: two chains of dependent mma instead of one twice as long.
        float even[4] = {0.f, 0.f, 0.f, 0.f}, odd[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int ks = 0; ks < kKSteps; ks++) {
          const uint32_t a[4] = {fp8x2_to_f16x2(kw0[ks]), fp8x2_to_f16x2(kw1[ks]), fp8x2_to_f16x2(kw0[ks], 1),
                                 fp8x2_to_f16x2(kw1[ks], 1)};
          MmaOp<__half>::run(ks & 1 ? odd : even, a, qf[ks][0], qf[ks][2]);
        }
        const int left = valid - 64 * i;  // rows of this chunk past it are masked
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int tok = lane_row(r0 + 8 * (e >> 1));
          s[i][e] = tok < left ? (even[e] + odd[e]) * (head_factor[e & 1] * k_sc[tok]) : -INFINITY;
          mx[e & 1] = fmaxf(mx[e & 1], s[i][e]);
        }
        vmax = fmaxf(vmax, fmaxf(v_sc[lane_row(r0)], v_sc[lane_row(r0 + 8)]));  // masked rows' scales are zero
      }
      vmax = column_max(vmax);
      float sc[2];
      fragment_rescale(
          mx, m, l, sc, [](float x) { return column_max(x); }, [](float x) { return fast_exp2(x); });
      const float o_adj = move_v_reference(v_ref, v_unit, vmax);
      rescale_output(o, {sc[0] * o_adj, sc[1] * o_adj, sc[0] * o_adj, sc[1] * o_adj});  // columns are heads
#pragma unroll
      for (int i = 0; i < kPerWarp; i++) {
        if (i >= chunks) break;
        const uint8_t *vc = vs_ + i * kBlockBytes;
        const float *v_sc = v_scale + 64 * i;
        float pv[4];
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int tok = lane_row(r0 + 8 * (e >> 1));
          const float pe = fast_exp2(s[i][e] - m[e & 1]);
          l[e & 1] += pe;
          pv[e] = pe * (v_sc[tok] * v_unit);
        }
        // P^T's B fragments: k = tokens 2cq, 2cq + 1 (b0) and + 8 (b1), n = head r0.
        const uint32_t b0 = transpose8x8(pack2<__half>(pv[0], pv[1])), b1 = transpose8x8(pack2<__half>(pv[2], pv[3]));
        // V codes of tokens 2cq, 2cq + 1, 2cq + 8, 2cq + 9 in the lane's spans r0 and r0 + 8.
        uint32_t va[4][kSpan / 4], vb[4][kSpan / 4];
#pragma unroll
        for (int t = 0; t < 4; t++) {
          const int tok = lane_row(2 * cq + (t & 1) + 8 * (t >> 1));
          load_codes<kSpan>(vc, tok, r0 * kSpan, va[t]);
          load_codes<kSpan>(vc, tok, (r0 + 8) * kSpan, vb[t]);
        }
#pragma unroll
        for (int w = 0; w < kSpan / 4; w++) {
          // Bytes of m-tiles 4w .. 4w + 3: each 16-bit half pairs tokens (2cq, 2cq + 1) or (2cq + 8, 2cq + 9).
          const uint32_t a0[2] = {byte_perm(va[0][w], va[1][w], 0x5140), byte_perm(va[0][w], va[1][w], 0x7362)};
          const uint32_t a1[2] = {byte_perm(vb[0][w], vb[1][w], 0x5140), byte_perm(vb[0][w], vb[1][w], 0x7362)};
          const uint32_t a2[2] = {byte_perm(va[2][w], va[3][w], 0x5140), byte_perm(va[2][w], va[3][w], 0x7362)};
          const uint32_t a3[2] = {byte_perm(vb[2][w], vb[3][w], 0x5140), byte_perm(vb[2][w], vb[3][w], 0x7362)};
#pragma unroll
          for (int q4 = 0; q4 < 4; q4++) {
            const int h = q4 >> 1, half = q4 & 1;
            const uint32_t a[4] = {fp8x2_to_f16x2(a0[h], half), fp8x2_to_f16x2(a1[h], half), fp8x2_to_f16x2(a2[h], half),
                                   fp8x2_to_f16x2(a3[h], half)};
            MmaOp<__half>::run(o[4 * w + q4], a, b0, b1);
          }
        }
      }
    };
    const int done = stream_task_tiles(loader, tiles.sched, smem, tile_math);

    float *sm_lse = reinterpret_cast<float *>(smem);
    float *sm_o = sm_lse + kWarps * 16;
#pragma unroll
    for (int c = 0; c < 2; c++) {
      l[c] = column_sum(l[c]);
      const int y = 2 * cq + c;
      if (y >= g) continue;
      const float inv = l[c] > 0.f ? v_ref / l[c] : 0.f;  // o holds O / v_ref
      float *dst = sm_o + (warp * g + y) * D;
#pragma unroll
      for (int n = 0; n < kMTiles; n++) {
        dst[r0 * kMTiles + n] = o[n][c] * inv;
        dst[(r0 + 8) * kMTiles + n] = o[n][2 + c] * inv;
      }
      if (r0 == 0) sm_lse[warp * g + y] = l[c] > 0.f ? m[c] + __log2f(l[c]) : -INFINITY;
    }
    __syncthreads();
    write_task_output<Q, D, kThreads, kSmemBytes>(p, task.row, head, split, row, sm_lse, sm_o, kWarps, sm_lse,
                                                  tiles.sched.cursor ? done : -1, tiles.sched.ntiles);
    __syncthreads();  // the next task's prologue reuses this memory
  }
};

}  // namespace pkv
