// fp32 online softmax in the log2 domain (scores are pre-multiplied by sm_scale * log2 e), and the one
// merge primitive: combining (lse, normalised output) states by their log-sum-exp weights.
#pragma once
#include <cuda_runtime.h>

#include <cmath>

namespace pkv {

// 2^x on the special-function unit (ex2.approx.ftz: relative error about 2^-22; -inf gives 0). exp2f's
// handling of results under 2^-126 costs four more instructions a call, for weights no f16 or bf16 output
// can tell from 0: the FP8 bodies, whose instruction count per byte limits them, and the shared-prefix
// tasks, whose softmax issues beside their MMAs, take this one.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// One thread's share of a query head's running state: D/BDX output elements (two 8-vectors).
struct SoftmaxState {
  float m = -INFINITY;  // running max (log2 domain)
  float l = 0.f;        // running denominator, relative to m
  float o[16] = {};     // running numerator . V, relative to m

  // Folds in `n` scores and their V rows (v_at(i, j) gives element j of this thread's slice of row i).
  // Masked scores are -inf. Returns without change when every score is masked.
  template <int N, typename VRow>
  __device__ __forceinline__ void update(const float (&s)[N], VRow v_at) {
    update_weighted(s, [](int) { return 1.f; }, v_at);
  }

  // As update, with V row i weighted by weight(i) (an FP8 row's scale): o += p_i * weight(i) * row_i, one
  // multiply per token where scaling the row would take one per element.
  template <int N, typename Weight, typename VRow>
  __device__ __forceinline__ void update_weighted(const float (&s)[N], Weight weight, VRow v_at) {
    float mx = s[0];
#pragma unroll
    for (int i = 1; i < N; i++) mx = fmaxf(mx, s[i]);
    if (mx == -INFINITY) return;
    float m_new = fmaxf(m, mx);
    float scale = exp2f(m - m_new);  // 0 on the first update (m = -inf)
    l *= scale;
#pragma unroll
    for (int j = 0; j < 16; j++) o[j] *= scale;
#pragma unroll
    for (int i = 0; i < N; i++) {
      const float p = exp2f(s[i] - m_new);
      l += p;
      const float w = p * weight(i);
      float row[16];
      v_at(i, row);
#pragma unroll
      for (int j = 0; j < 16; j++) o[j] = fmaf(w, row[j], o[j]);
    }
    m = m_new;
  }

  __device__ __forceinline__ float lse() const { return l > 0.f ? m + __log2f(l) : -INFINITY; }
};

// Sum over the BDX lanes that share a token (aligned lane groups; all of them reach this call).
template <int BDX>
__device__ __forceinline__ float lane_group_sum(float x) {
  const unsigned lane = threadIdx.x & 31;
  const unsigned mask = BDX == 32 ? 0xffffffffu : ((1u << BDX) - 1) << (lane & ~(unsigned)(BDX - 1));
#pragma unroll
  for (int off = BDX / 2; off > 0; off /= 2) x += __shfl_xor_sync(mask, x, off);
  return x;
}

// mma fragments: the four lanes of a quad (lane % 4) share a row; its max and sum over them.
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// The online-softmax step of a chunk on mma fragments (rows r0 and r0 + 8): mx, this lane's chunk maxima,
// becomes the rows' maxima; m and l move to them; sc says by how much the running output must shrink.
// `reduce` gives the maximum over the lanes that share a row (quad_max by default); `exp2` is exp2f unless
// the body passes fast_exp2.
template <class Reduce, class Exp2>
__device__ __forceinline__ void fragment_rescale(float (&mx)[2], float (&m)[2], float (&l)[2], float (&sc)[2],
                                                 Reduce reduce, Exp2 exp2) {
#pragma unroll
  for (int i = 0; i < 2; i++) {
    mx[i] = reduce(mx[i]);
    const float m_new = fmaxf(m[i], mx[i]);  // finite: the chunk's first row is valid
    sc[i] = exp2(m[i] - m_new);
    m[i] = m_new;
    l[i] *= sc[i];
  }
}
template <class Reduce>
__device__ __forceinline__ void fragment_rescale(float (&mx)[2], float (&m)[2], float (&l)[2], float (&sc)[2],
                                                 Reduce reduce) {
  fragment_rescale(mx, m, l, sc, reduce, [](float x) { return exp2f(x); });
}
__device__ __forceinline__ void fragment_rescale(float (&mx)[2], float (&m)[2], float (&l)[2], float (&sc)[2]) {
  fragment_rescale(mx, m, l, sc, [](float x) { return quad_max(x); });
}

// As fragment_rescale, for rows a chunk may mask whole (the causal rows of a row of several queries):
// base[i] is the maximum the chunk's probabilities subtract, 0 for a row that has seen no token yet,
// so that its probabilities and scale are 0, not NaN.
__device__ __forceinline__ void fragment_rescale_masked(float (&mx)[2], float (&m)[2], float (&l)[2], float (&sc)[2],
                                                        float (&base)[2]) {
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const float m_new = fmaxf(m[i], quad_max(mx[i]));
    base[i] = m_new == -INFINITY ? 0.f : m_new;
    sc[i] = exp2f(m[i] - base[i]);
    m[i] = m_new;
    l[i] *= sc[i];
  }
}

// Merges n states given as (lse_i, o_i): o = sum w_i o_i / sum w_i with w_i = exp2(lse_i - max).
// lse_at(i) and o_at(i, f) read state i (f receives 8 elements); returns the merged lse (log2 domain).
template <typename Lse, typename Out>
__device__ __forceinline__ float merge_states(int n, Lse lse_at, Out o_at, float (&o)[8]) {
  float mx = -INFINITY;
  for (int i = 0; i < n; i++) mx = fmaxf(mx, lse_at(i));
#pragma unroll
  for (int j = 0; j < 8; j++) o[j] = 0.f;
  float sum = 0.f;
  for (int i = 0; i < n; i++) {
    float li = lse_at(i);
    if (li == -INFINITY) continue;  // a state that saw no token
    float w = exp2f(li - mx);
    float oi[8];
    o_at(i, oi);
    sum += w;
#pragma unroll
    for (int j = 0; j < 8; j++) o[j] = fmaf(w, oi[j], o[j]);
  }
  if (sum == 0.f) return -INFINITY;  // no state saw a token (a claiming split that got no tile): o stays 0
  float inv = 1.f / sum;
#pragma unroll
  for (int j = 0; j < 8; j++) o[j] *= inv;
  return mx + __log2f(sum);
}

}  // namespace pkv
