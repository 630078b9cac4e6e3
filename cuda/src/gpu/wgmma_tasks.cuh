// Attention tasks on Hopper's warpgroup MMAs (sm_90a, head dims 64 and 128): a task is up to 128 query
// rows of one KV head against a range of paged context tokens, computed by two warpgroups of 64 rows.
// A section (the shared-prefix tasks, shared_tasks_wgmma.cuh; the long multi-query tiles,
// multiquery_wgmma.cuh) says where a task's query rows come from, whether they are causal, and where
// its outputs go; everything between is here.
//
// Such a task is a dense attention over thousands of tokens: compute-bound. mma.sync with ldmatrix
// operands tops out near 200 TFLOP/s there (shared-memory bandwidth and issue slots); wgmma reads Q
// and K straight from shared memory and issues one instruction per 64 x N x 16.
// - S = Q K^T: m64n128k16 with Q and K both K-major from shared memory (m64n64 ones read twice the
//   shared-memory bytes per FLOP and left the MMAs at a third of their rate);
// - O += P V: m64nDk16 with P from the S registers (the accumulator layout is the A layout, as with
//   mma.sync) and V N-major (transposed) from shared memory;
// - a producer warpgroup streams K/V tiles of 128 tokens by cp.async through as many stages as fit (3
//   at D 128) into the 128-byte-swizzled layout the descriptors describe (wgmma.cuh), each stage with
//   a "full" mbarrier (completed by the copies themselves as they land) and an "empty" one (both
//   warpgroups are done with it). No block-wide barrier per tile: the two warpgroups drift apart, so
//   one's softmax runs while the other's MMAs do;
// - in a task of more than 64 rows, a warpgroup issues S of the next tile before PV of this one, and
//   the next tile's softmax runs under this one's PV;
// - a task of 64 rows or fewer runs both warpgroups on the same rows, each on every other tile, and
//   their states meet by log-sum-exp in the epilogue.
//
// A section S<T, D> provides:
//   using Params (k, v, table, table_stride, q, num_kv_heads, group, page_shift, scale_log2 as ShParams);
//   struct Task { head, table_row, kv_begin, kv_end, rows, first_pos; ... }, first_pos the context
//     position of row 0's query token (causal sections: row r's is first_pos + r / group);
//   static constexpr bool kCausal;
//   static int num_tasks(p); static bool load(p, index, Task &) (false: skip the record);
//   static int64_t q_token(p, task, r): the q row (token) of task row r;
//   static int64_t output_at(p, task, r, lse2): where row r's D outputs go (writing its lse2, log2,
//     -inf where the row saw no token), and static void put(p, task, at, const float (&acc)[8]).
#pragma once
#include <climits>

#include "decode_mma.cuh"
#include "decode_softmax.cuh"
#include "decode_vec.cuh"
#include "wgmma.cuh"

namespace pkv {

constexpr int kWgTaskRows = 128;  // query rows of one task: 2 consumer warpgroups x 64

template <int D>
struct WgShape {
  static_assert(D == 64 || D == 128, "the warpgroup kernel serves head dims 64 and 128");
  // Two consumer warpgroups and a producer warpgroup. Registers are allocated per warpgroup: the
  // producer gives most of its share to the consumers (setmaxnreg), whose O, S and P of a 128-token
  // tile take 160 a thread at D 128.
  static constexpr int kConsumers = 256, kProducers = 128, kThreads = kConsumers + kProducers;
  static constexpr int kProducerRegs = 56, kConsumerRegs = 224;
  static_assert(kProducers * kProducerRegs + kConsumers * kConsumerRegs <= 65536, "the register file holds both");
  static constexpr int kTile = 128;  // tokens per stage
  static constexpr int kChunks = D / 8;
  static constexpr int kTileBytes = kTile * D * 2;  // K (or V) of one tile
  static constexpr int kStageBytes = 2 * kTileBytes;
  static constexpr int kQBytes = kWgTaskRows * D * 2;
  // As many stages as fit beside Q in a block's 227 KB (up to 8): at D 128, 3 of 64 KB. A consumer of
  // a large task holds two (this tile's V and the next one's K), the producer fills the third.
  static constexpr size_t kSmemLimit = 232448, kReserve = 2 * 8 * 8 + 1024;
  static constexpr int kStages = (int)((kSmemLimit - kReserve - kQBytes) / kStageBytes) < 8
                                     ? (int)((kSmemLimit - kReserve - kQBytes) / kStageBytes)
                                     : 8;
  static_assert(kStages >= 3, "a stage for the producer beside the consumers' two");
  static_assert(kTile * kChunks % kProducers == 0, "a tile's chunks split evenly over the producer's threads");
  // Epilogue, reusing Q and the stages: each consumer warp's 16 rows of unnormalised outputs (padded
  // rows), their maxima and sums; then per task row the two parts' weights and the row's output offset.
  static constexpr int kStateStride = D + 8;
  static constexpr int kWarpState = 16 * kStateStride + 32;
  static constexpr size_t kEpilogueBytes =
      (size_t)(kConsumers / 32 * kWarpState + kWgTaskRows * 2) * 4 + (size_t)kWgTaskRows * 8;
  static constexpr size_t kBodyBytes = (size_t)kQBytes + (size_t)kStages * kStageBytes;
  static_assert(kEpilogueBytes <= kBodyBytes, "the epilogue fits in Q and the stages");
  // After the body: the stages' full and empty mbarriers; 1024 bytes of room to align the swizzle atoms.
  static constexpr size_t kSmemBytes = kBodyBytes + 2 * kStages * 8 + 1024;
  static_assert(kSmemBytes <= kSmemLimit, "within the opt-in limit of a block's shared memory");
};

// The consumer warpgroups' part of a task: S, the online softmax and PV over every tile.
// PARTS 1 (65..128 rows): warpgroup w takes rows 64w..64w+63 of every tile, and issues S of the next
// tile and PV of this one together, so that the next tile's softmax runs under the PV. PARTS 2 (up to 64 rows, a
// memory-bound task): both take rows 0..63, warpgroup w the tiles w, w + 2, ..., so that two tiles are
// in work at once; a warpgroup waits for the other's tiles too (and releases them at once), which keeps
// its arrivals on every stage in order.
template <class Sec, int D, int PARTS>
__device__ __forceinline__ void wg_consume(const typename Sec::Params &p, const typename Sec::Task &task,
                                           unsigned char *smem, uint64_t *full, uint64_t *empty, uint32_t seq,
                                           float (&o)[D / 2], float (&m)[2], float (&l)[2]) {
  using S = WgShape<D>;
  using T = typename Sec::Elem;
  constexpr int kN = S::kTile, kStages = S::kStages;
  const uint32_t sq_addr = (uint32_t)__cvta_generic_to_shared(smem), skv_addr = sq_addr + S::kQBytes;
  const int lane = threadIdx.x & 31, wg = threadIdx.x >> 7;
  const int ntiles = (task.kv_end - task.kv_begin + S::kTile - 1) / S::kTile;
  const float scale = p.scale_log2;
  // Causal: this thread's two rows see context positions up to pos[h]; tiles wholly at or before the
  // earliest row's position need no mask but the range's end.
  int pos[2] = {INT_MAX, INT_MAX}, mask_from = task.kv_end;
  if constexpr (Sec::kCausal) {
    const int row0 = (PARTS == 2 ? 0 : wg * 64) + ((threadIdx.x >> 5) & 3) * 16 + (lane >> 2);
#pragma unroll
    for (int h = 0; h < 2; h++) pos[h] = task.first_pos + min(row0 + 8 * h, task.rows - 1) / p.group;
    mask_from = min(mask_from, task.first_pos + 1);
  }
  // Descriptors of this warpgroup's 64 Q rows, and of K and V at stage 0; k-steps and stages move their
  // addresses by constants.
  const uint64_t q_desc = wg_desc(sq_addr + (PARTS == 2 ? 0 : wg) * 64 * 128, 16, 1024);
  const uint64_t k_desc = wg_desc(skv_addr, 16, 1024), v_desc = wg_desc(skv_addr + S::kTileBytes, S::kTile * 128, 1024);
  // Stage and mbarrier phase of the tile being computed (cur) and of the next one whose S is issued.
  uint32_t cur = seq % kStages, next = cur, phase = seq / kStages;
  // Waits for the next tile to land. cp.async writes shared memory in the generic proxy and wgmma reads
  // it in the async proxy: each reading thread fences the two once the barrier has made the copies
  // visible to it.
  auto wait_next = [&]() {
    mbar_wait_parity(&full[next], phase & 1);
    wg_proxy_fence();
    const uint32_t stage = next;
    if (++next == (uint32_t)kStages) next = 0, phase++;
    return stage;
  };
  // Waits for the next tile and issues S = Q K^T of it into sc (one commit group).
  auto issue_scores = [&](float (&sc)[kN / 2]) {
    const uint32_t stage = wait_next();
    const uint64_t kd0 = wg_desc_add(k_desc, stage * S::kStageBytes);
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
      const uint32_t in_row = (kk & 3) * 32;  // k-step kk is 32 bytes into a row of 64-column block kk / 4
      const uint64_t qd = wg_desc_add(q_desc, (kk >> 2) * kWgTaskRows * 128 + in_row);
      const uint64_t kd = wg_desc_add(kd0, (kk >> 2) * S::kTile * 128 + in_row);
      WgMma<T>::template ss<kN>(sc, qd, kd, kk > 0);
    }
    wg_commit();
  };
  // Tile `it`'s scores in s: the mask and the online softmax, P left in s as fp32 (pack makes the PV
  // operand of it); alpha: the factor O's rows take before this tile's PV.
  auto softmax = [&](float (&s)[kN / 2], int it, float (&alpha)[2]) {
    const int tile_begin = task.kv_begin + it * S::kTile;
    if (tile_begin + S::kTile > mask_from) {  // tokens at or past kv_end, or (causal) past a row's own
#pragma unroll
      for (int j = 0; j < kN / 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int tok = tile_begin + j * 8 + (lane & 3) * 2 + (e & 1);
          if (tok >= task.kv_end || (Sec::kCausal && tok > pos[e >> 1])) s[4 * j + e] = -INFINITY;
        }
    }
#pragma unroll
    for (int h = 0; h < 2; h++) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < kN / 8; j++) mx = fmaxf(mx, fmaxf(s[4 * j + 2 * h], s[4 * j + 2 * h + 1]));
      const float m_new = fmaxf(m[h], quad_max(mx) * scale);
      const float m_use = m_new == -INFINITY ? 0.f : m_new;  // a part that has seen no token yet: p = 0, not NaN
      alpha[h] = fast_exp2(m[h] - m_use);
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < kN / 8; j++) {
        s[4 * j + 2 * h] = fast_exp2(fmaf(s[4 * j + 2 * h], scale, -m_use));
        s[4 * j + 2 * h + 1] = fast_exp2(fmaf(s[4 * j + 2 * h + 1], scale, -m_use));
        sum += s[4 * j + 2 * h] + s[4 * j + 2 * h + 1];
      }
      l[h] = l[h] * alpha[h] + sum;  // this lane's columns; the quad's sum is taken once, at the end
      m[h] = m_new;
    }
  };
  // P of tokens 16kk..16kk+15 in 16 bits: the C fragments of n-tiles 2kk and 2kk + 1.
  auto pack = [&](const float (&s)[kN / 2], uint32_t (&pa)[kN / 16][4]) {
#pragma unroll
    for (int kk = 0; kk < kN / 16; kk++) {
      const float *lo = s + 8 * kk, *hi = lo + 4;
      pa[kk][0] = pack2<T>(lo[0], lo[1]), pa[kk][1] = pack2<T>(lo[2], lo[3]);
      pa[kk][2] = pack2<T>(hi[0], hi[1]), pa[kk][3] = pack2<T>(hi[2], hi[3]);
    }
  };
  // O's rows times alpha, before the tile's PV. No MMA may be in flight: ptxas serialises MMAs whose
  // accumulators other instructions touch meanwhile.
  auto rescale = [&](const float (&alpha)[2]) {
    wg_fence_operands(o);
#pragma unroll
    for (int h = 0; h < 2; h++)
      if (__any_sync(0xffffffffu, alpha[h] != 1.f)) {  // once the maxima settle no row rescales
#pragma unroll
        for (int j = 0; j < D / 8; j++) o[4 * j + 2 * h] *= alpha[h], o[4 * j + 2 * h + 1] *= alpha[h];
      }
  };
  // The PV MMAs of the tile at stage `cur` (one commit group, not waited for).
  auto accumulate = [&](const uint32_t (&pa)[kN / 16][4]) {
    const uint64_t vd0 = wg_desc_add(v_desc, cur * S::kStageBytes);
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < kN / 16; kk++)  // V rows of tokens 16kk..: 8-token groups 1024 bytes apart
      WgMma<T>::template rs<D>(o, pa[kk], wg_desc_add(vd0, kk * 16 * 128));
    wg_commit();
  };
  // The stage at `cur` is free once its PV has completed.
  auto release = [&]() {
    mbar_arrive(&empty[cur]);
    if (++cur == (uint32_t)kStages) cur = 0;
  };

  float s[kN / 2], alpha[2];
  uint32_t pa[kN / 16][4];
  if constexpr (PARTS == 1) {
    // S of tile it + 1 is issued before PV of tile it, and the softmax of tile it + 1 runs while PV of
    // tile it does. PV reads P from registers while it runs, so the softmax leaves its P in s and packs
    // it over pa once that PV has completed: one P set, so that O, S and P fit the registers.
    issue_scores(s);
    wg_wait();
    wg_fence_operands(s);
    softmax(s, 0, alpha);
    pack(s, pa);
    // Tile it's PV with the next tile's S and softmax; the last tile's PV alone.
    for (int it = 0; it + 1 < ntiles; it++) {
      rescale(alpha);
      issue_scores(s);
      accumulate(pa);
      wg_wait<1>();  // S of tile it + 1; PV of tile it may still run
      wg_fence_operands(s);
      softmax(s, it + 1, alpha);
      wg_wait();
      release();
      pack(s, pa);
    }
    rescale(alpha);
    accumulate(pa);
    wg_wait();
    release();
  } else {
    for (int it = 0; it < ntiles; it++) {
      if ((it & 1) != wg) {  // the other warpgroup's tile
        wait_next();
        release();
        continue;
      }
      issue_scores(s);
      wg_wait();
      wg_fence_operands(s);
      softmax(s, it, alpha);
      pack(s, pa);
      rescale(alpha);
      accumulate(pa);
      wg_wait();
      release();
    }
  }
  wg_fence_operands(o);
}

// A barrier of the two consumer warpgroups alone (barrier 0 is the whole block's).
__device__ __forceinline__ void wg_consumer_sync() { asm volatile("bar.sync 1, 256;\n" ::: "memory"); }

// A consumer warp's state after a task's last tile: its 16 rows of unnormalised outputs, maxima and sums
// into shared memory over Q and the stages, once both warpgroups are done with them.
template <int D>
__device__ __forceinline__ void wg_write_state(unsigned char *smem, const float (&o)[D / 2], const float (&m)[2],
                                               const float (&l)[2]) {
  using S = WgShape<D>;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  wg_consumer_sync();  // both warpgroups are done with Q and the stages
  float *st = reinterpret_cast<float *>(smem) + warp * S::kWarpState;
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const int r = lane / 4 + 8 * h;
#pragma unroll
    for (int j = 0; j < D / 8; j++)
      *reinterpret_cast<float2 *>(st + r * S::kStateStride + j * 8 + (lane & 3) * 2) =
          make_float2(o[4 * j + 2 * h], o[4 * j + 2 * h + 1]);
    const float lsum = quad_sum(l[h]);
    if ((lane & 3) == 0) st[16 * S::kStateStride + r] = m[h], st[16 * S::kStateStride + 16 + r] = lsum;
  }
}

// The consumers only, while the producer waits: the states (wg_write_state) merged per row over the
// parts, normalised, and handed to the section (output_at, put) 8 columns at a time; consecutive
// threads write consecutive columns.
template <class Sec, int D, int PARTS>
__device__ __forceinline__ void wg_store(const typename Sec::Params &p, const typename Sec::Task &task,
                                         unsigned char *smem) {
  using S = WgShape<D>;
  static_assert(S::kConsumers == 256, "wg_consumer_sync counts 256 threads");
  const int tid = threadIdx.x, rows = task.rows;
  wg_consumer_sync();  // the states are written
  float *states = reinterpret_cast<float *>(smem);
  float *row_w = states + S::kConsumers / 32 * S::kWarpState;  // [row][part]: the part's weight over the row's sum
  int64_t *row_at = reinterpret_cast<int64_t *>(row_w + kWgTaskRows * 2);  // where the row's outputs go
  // Task row r's state in part q: warp (PARTS 2: q, else r / 64) * 4 + (r % 64) / 16, its row r % 16.
  auto state_of = [&](int r, int q) {
    return states + ((PARTS == 2 ? q : r >> 6) * 4 + ((r & 63) >> 4)) * S::kWarpState;
  };
  for (int r = tid; r < rows; r += S::kConsumers) {
    float mq[PARTS], lq[PARTS], mx = -INFINITY;
#pragma unroll
    for (int q = 0; q < PARTS; q++) {
      const float *st = state_of(r, q) + 16 * S::kStateStride + (r & 15);
      mq[q] = st[0], lq[q] = st[16], mx = fmaxf(mx, mq[q]);
    }
    float w[PARTS], sum = 0.f;
#pragma unroll
    for (int q = 0; q < PARTS; q++) {
      w[q] = mq[q] == -INFINITY ? 0.f : exp2f(mq[q] - mx);  // a part that saw no token
      sum += w[q] * lq[q];
    }
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
#pragma unroll
    for (int q = 0; q < PARTS; q++) row_w[r * 2 + q] = w[q] * inv;
    row_at[r] = Sec::output_at(p, task, r, sum > 0.f ? mx + __log2f(sum) : -INFINITY);
  }
  wg_consumer_sync();
  for (int i = tid; i < rows * (D / 8); i += S::kConsumers) {
    const int r = i / (D / 8), d = (i % (D / 8)) * 8;
    float acc[8] = {};
#pragma unroll
    for (int q = 0; q < PARTS; q++) {
      const float wq = row_w[r * 2 + q], *st = state_of(r, q) + (r & 15) * S::kStateStride + d;
#pragma unroll
      for (int e = 0; e < 8; e++) acc[e] = fmaf(wq, st[e], acc[e]);
    }
    Sec::put(p, task, row_at[r] + d, acc);
  }
}

// The producer warpgroup's part of a task: Q with the first tile, then every K/V tile into its stage
// once the consumers have released the stage's previous tile. A producer thread owns one 16-byte
// column c of every row and the rows t0, t0 + kRowStep, ... of a tile: since kRowStep is a multiple
// of 8 those rows share t0's swizzle, so a row's shared address is one add, and its global one a
// page id times the page stride.
template <class Sec, int D>
__device__ __forceinline__ void wg_produce(const typename Sec::Params &p, const typename Sec::Task &task,
                                           unsigned char *smem, uint64_t *full, uint64_t *empty, uint32_t seq) {
  using S = WgShape<D>;
  using T = typename Sec::Elem;
  constexpr int kChunks = S::kChunks, kStages = S::kStages;
  constexpr int kRowStep = S::kProducers / kChunks, kRowsPerThread = S::kTile / kRowStep;
  static_assert(kRowStep % 8 == 0 && S::kTile % kRowStep == 0, "a thread's rows keep one swizzle");
  unsigned char *sq = smem, *skv = smem + S::kQBytes;  // stage s: K at skv + s kStageBytes, V after it
  const int g = p.group, hq = p.num_kv_heads * g, rows = task.rows;
  const int ntiles = (task.kv_end - task.kv_begin + S::kTile - 1) / S::kTile;
  const int pt = threadIdx.x - S::kConsumers;  // the producer's thread
  const int c = pt % kChunks, t0 = pt / kChunks;

  // Q rows with the first tile: task row r is query head r % g of the group in q row (token)
  // q_token(r); zero past the task's rows.
  const T *qbase = static_cast<const T *>(p.q);
  auto load_q = [&]() {
    for (int r = t0; r < kWgTaskRows; r += kRowStep) {
      const T *src = qbase;
      if (r < rows) src = qbase + (Sec::q_token(p, task, r) * hq + (int64_t)task.head * g + r % g) * D + c * 8;
      cp_async16(sq + wg_chunk_offset(kWgTaskRows, r, c), src, r < rows ? 16 : 0);
    }
  };

  const int32_t *table = p.table + (int64_t)task.table_row * p.table_stride;
  const int page_mask = (1 << p.page_shift) - 1;
  // Element offsets: a page of all KV heads, and this thread's column within the task's head.
  const int64_t page_stride = ((int64_t)p.num_kv_heads * D) << p.page_shift;
  const int64_t head_at = (((int64_t)task.head * D) << p.page_shift) + c * 8;
  const T *kbase = static_cast<const T *>(p.k) + head_at, *vbase = static_cast<const T *>(p.v) + head_at;
  const uint32_t row_at = wg_chunk_offset(S::kTile, t0, c);
  // The page ids of a tile's rows, loaded once the previous tile's copies are issued, so that their
  // latency passes while the next stage is awaited.
  auto load_pages = [&](int32_t(&page)[kRowsPerThread], int it) {
    const int tok0 = task.kv_begin + it * S::kTile + t0;
#pragma unroll
    for (int j = 0; j < kRowsPerThread; j++) {
      const int tok = tok0 + j * kRowStep;
      page[j] = tok < task.kv_end ? __ldg(table + (tok >> p.page_shift)) : 0;
    }
  };
  int32_t page[kRowsPerThread];
  load_pages(page, 0);
  uint32_t stage = seq % kStages, phase = seq / kStages;
  for (int it = 0; it < ntiles; it++) {
    if (seq + it >= (uint32_t)kStages) mbar_wait_parity_sleep(&empty[stage], (phase - 1) & 1);
    if (it == 0) load_q();
    // K and V of the tile; tokens past the range are zero-filled (finite scores, masked by the consumers).
    unsigned char *sk = skv + stage * S::kStageBytes + row_at, *sv = sk + S::kTileBytes;
    const int tok0 = task.kv_begin + it * S::kTile + t0;
#pragma unroll
    for (int j = 0; j < kRowsPerThread; j++) {
      const int tok = tok0 + j * kRowStep;
      const bool in = tok < task.kv_end;
      const int64_t at = in ? page[j] * page_stride + (int64_t)(tok & page_mask) * D : 0;
      cp_async16(sk + j * kRowStep * 128, kbase + at, in ? 16 : 0);
      cp_async16(sv + j * kRowStep * 128, vbase + at, in ? 16 : 0);
    }
    // The stage's full barrier completes when every producer thread's copies of it have landed: the
    // producer goes on to the next stage at once, and no tile's signal waits on a later release.
    cp_async_arrive(&full[stage]);
    if (++stage == (uint32_t)kStages) stage = 0, phase++;
    if (it + 1 < ntiles) load_pages(page, it + 1);
  }
}

// The consumer warpgroups' part of a task, from the first tile to the section's outputs. Both ways of
// dividing the rows work on the same O registers (with two sets ptxas serialises the MMAs).
template <class Sec, int D>
__device__ __forceinline__ void wg_compute(const typename Sec::Params &p, const typename Sec::Task &task,
                                           unsigned char *smem, uint64_t *full, uint64_t *empty, uint32_t seq) {
  float o[D / 2];  // O: n-tile j of 8 columns is o[4j .. 4j + 3]
#pragma unroll
  for (int i = 0; i < D / 2; i++) o[i] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // rows lane / 4 and lane / 4 + 8 of a warp; m: log2 domain
  if (task.rows > 64) {
    wg_consume<Sec, D, 1>(p, task, smem, full, empty, seq, o, m, l);
    wg_write_state<D>(smem, o, m, l);
    wg_store<Sec, D, 1>(p, task, smem);
  } else {
    wg_consume<Sec, D, 2>(p, task, smem, full, empty, seq, o, m, l);
    wg_write_state<D>(smem, o, m, l);
    wg_store<Sec, D, 2>(p, task, smem);
  }
}

// A block's tasks: blockIdx.x, then every gridDim.x-th after it. Only sm_90a has wgmma; the engine
// launches this only there, and any other target traps rather than skip the tasks.
template <class Sec>
__device__ __forceinline__ void wg_run_tasks(const typename Sec::Params &p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int D = Sec::kHeadDim;
  using S = WgShape<D>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char *smem = reinterpret_cast<unsigned char *>(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
  uint64_t *full = reinterpret_cast<uint64_t *>(smem + S::kBodyBytes), *empty = full + S::kStages;
  if (threadIdx.x == 0) {
    for (int s = 0; s < S::kStages; s++) mbar_init(&full[s], S::kProducers), mbar_init(&empty[s], S::kConsumers);
    fence_async_shared();
  }
  __syncthreads();
  // Each role runs its own task loop, so that ptxas compiles the producer's code apart and within its
  // registers. `seq` counts the block's tiles over its tasks: tile seq uses stage seq % kStages in
  // mbarrier phase seq / kStages.
  const int num_tasks = Sec::num_tasks(p);
  auto for_each_task = [&](auto work) {
    uint32_t seq = 0;
    for (int t = blockIdx.x; t < num_tasks; t += gridDim.x) {
      typename Sec::Task task;
      // The planners never write an empty or oversized task; one is skipped rather than run.
      if (!Sec::load(p, t, task) || task.rows <= 0 || task.rows > kWgTaskRows || task.kv_end <= task.kv_begin) continue;
      work(task, seq);
      __syncthreads();  // the epilogue is done: the next task's copies overwrite its memory
      seq += (task.kv_end - task.kv_begin + S::kTile - 1) / S::kTile;
    }
  };
  if (threadIdx.x >= S::kConsumers) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(S::kProducerRegs));
    for_each_task([&](const typename Sec::Task &task, uint32_t seq) { wg_produce<Sec, D>(p, task, smem, full, empty, seq); });
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(S::kConsumerRegs));
    for_each_task([&](const typename Sec::Task &task, uint32_t seq) { wg_compute<Sec, D>(p, task, smem, full, empty, seq); });
  }
#else
  __trap();
#endif
}

}  // namespace pkv
