// Kernels of the synthetic model: q of a decode layer, K and V written straight into the pool's pages at
// each row's slot (as a model's fused cache-append epilogue would), and the sampled token. The rows are
// read from device memory when the kernel runs, so a captured step replays with new rows. The data is
// small (a few KB per row), so plain 16-bit accesses, consecutive threads on consecutive elements.
#include <algorithm>

#include "../core/internal.h"
#include "../core/synthetic_model.h"

namespace pkv {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;  // grid-stride beyond this: no count can overflow a grid dimension
constexpr int32_t kMaxGridY = 65535;

__device__ void write_kv_elements(const uint16_t *table, const SyntheticKV &kv, const pkv_synthetic_row &row,
                                  int32_t layer, uint32_t which, int32_t first, int32_t step) {
  if (row.slot < 0 || row.slot >= kv.num_slots) return;
  uint16_t *pages = (which == 0 ? kv.k : kv.v) + kv.layer_elems * layer;
  const uint32_t key = synthetic_kv_key(row, layer, which);
  const int32_t elems = kv.num_kv_heads * kv.head_dim;
  for (int32_t j = first; j < elems; j += step)
    pages[synthetic_kv_offset(kv, row.slot, j / kv.head_dim, j % kv.head_dim)] = synthetic_value(table, key, (uint32_t)j);
}

// grid.y strides over rows; grid.x covers one row's q, then its K, then its V.
__global__ void forward_kernel(SyntheticForward p) {
  const int32_t kv_elems = p.kv.num_kv_heads * p.kv.head_dim;
  const int32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  for (int32_t r = blockIdx.y; r < p.batch; r += gridDim.y) {
    const pkv_synthetic_row row = p.rows[r];
    if (i < p.q_elems) {
      p.q[(int64_t)r * p.q_elems + i] = synthetic_value(p.table, synthetic_q_key(row, p.layer), (uint32_t)i);
    } else if (i < p.q_elems + 2 * kv_elems && row.slot >= 0 && row.slot < p.kv.num_slots) {
      const int32_t j = i - p.q_elems, which = j >= kv_elems ? 1 : 0, e = j - which * kv_elems;
      uint16_t *pages = (which == 0 ? p.kv.k : p.kv.v) + p.kv.layer_elems * p.layer;
      pages[synthetic_kv_offset(p.kv, row.slot, e / p.kv.head_dim, e % p.kv.head_dim)] =
          synthetic_value(p.table, synthetic_kv_key(row, p.layer, (uint32_t)which), (uint32_t)e);
    }
  }
}

// A block per (token, layer, K or V) job, grid-stride over the jobs.
__global__ void prefill_kernel(SyntheticPrefill p) {
  const int64_t jobs = (int64_t)p.n * p.num_layers * 2;
  for (int64_t job = blockIdx.x; job < jobs; job += gridDim.x) {
    const int32_t which = (int32_t)(job & 1);
    const int32_t layer = (int32_t)((job >> 1) % p.num_layers);
    const int32_t t = (int32_t)((job >> 1) / p.num_layers);
    write_kv_elements(p.table, p.kv, p.rows[t], layer, (uint32_t)which, threadIdx.x, blockDim.x);
  }
}

__global__ void sample_kernel(SyntheticSample p) {
  for (int32_t r = blockIdx.x * blockDim.x + threadIdx.x; r < p.batch; r += gridDim.x * blockDim.x)
    p.tokens[r] = synthetic_token(p.rows[r], p.vocab);
}

}  // namespace

pkv_status gpu_synthetic_forward(const SyntheticForward &p, cudaStream_t stream) {
  if (p.batch <= 0) return PKV_OK;
  const int32_t per_row = p.q_elems + 2 * p.kv.num_kv_heads * p.kv.head_dim;
  const dim3 grid((per_row + kThreads - 1) / kThreads, std::min(p.batch, kMaxGridY));
  forward_kernel<<<grid, kThreads, 0, stream>>>(p);
  PKV_CUDA_TRY(cudaGetLastError());
  return PKV_OK;
}

pkv_status gpu_synthetic_prefill(const SyntheticPrefill &p, cudaStream_t stream) {
  if (p.n <= 0) return PKV_OK;
  const int64_t jobs = (int64_t)p.n * p.num_layers * 2;
  prefill_kernel<<<(unsigned)std::min(jobs, kMaxBlocks), kThreads, 0, stream>>>(p);
  PKV_CUDA_TRY(cudaGetLastError());
  return PKV_OK;
}

pkv_status gpu_synthetic_sample(const SyntheticSample &p, cudaStream_t stream) {
  if (p.batch <= 0) return PKV_OK;
  const int64_t blocks = std::min<int64_t>((p.batch + kThreads - 1) / kThreads, kMaxBlocks);
  sample_kernel<<<(unsigned)blocks, kThreads, 0, stream>>>(p);
  PKV_CUDA_TRY(cudaGetLastError());
  return PKV_OK;
}

}  // namespace pkv
