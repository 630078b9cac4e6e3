// KV pool data movement on the GPU: token scatter (writeKV), gather (readKV) and page copies
// (copy-on-write, swap to and from mapped pinned memory). All in 16-byte vectors: a head row is
// head_dim * 2 bytes, a multiple of 128, and pages are 256-byte aligned.
#include <algorithm>

#include "../core/kv_ops.h"

namespace pkv {

namespace {

// The most blocks a launch here uses: the kernels stride over the rest, so no count of tokens or pages
// can overflow the grid's dimension (a grid cast to 32 bits would silently drop work).
constexpr int64_t kMaxBlocks = 1 << 16;

// One thread per 16-byte vector of one (token, kv head) row, grid-stride; `to_pool` picks the direction.
__global__ void move_tokens_kernel(int4 *__restrict__ pool_k, int4 *__restrict__ pool_v, int4 *__restrict__ flat_k,
                                   int4 *__restrict__ flat_v, const int32_t *__restrict__ slots, int32_t n,
                                   int32_t heads, int32_t page_size, int32_t row_vecs, bool to_pool) {
  const int64_t total = (int64_t)n * heads * row_vecs;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int32_t vec = (int32_t)(i % row_vecs);
    int64_t token_head = i / row_vecs;
    int32_t h = (int32_t)(token_head % heads), t = (int32_t)(token_head / heads);
    int64_t slot = slots[t], page = slot / page_size, offset = slot % page_size;
    int64_t pool_at = ((page * heads + h) * page_size + offset) * row_vecs + vec;
    int64_t flat_at = token_head * row_vecs + vec;
    if (to_pool) {
      pool_k[pool_at] = flat_k[flat_at];
      pool_v[pool_at] = flat_v[flat_at];
    } else {
      flat_k[flat_at] = pool_k[pool_at];
      flat_v[flat_at] = pool_v[pool_at];
    }
  }
}

// A block per (page i, layer) item, grid-stride: copies that page's K and V vectors.
__global__ void copy_pages_kernel(PageSpace src, PageSpace dst, const int32_t *__restrict__ src_index,
                                  const int32_t *__restrict__ dst_index, int32_t n, int32_t layers, int64_t page_vecs) {
  for (int64_t item = blockIdx.x; item < (int64_t)n * layers; item += gridDim.x) {
    const int64_t i = item / layers, layer = item % layers;
    int64_t s = layer * src.layer_stride + src_index[i] * src.page_stride;
    int64_t d = layer * dst.layer_stride + dst_index[i] * dst.page_stride;
    const int4 *sk = reinterpret_cast<const int4 *>(src.k + s), *sv = reinterpret_cast<const int4 *>(src.v + s);
    int4 *dk = reinterpret_cast<int4 *>(dst.k + d), *dv = reinterpret_cast<int4 *>(dst.v + d);
    for (int64_t j = threadIdx.x; j < page_vecs; j += blockDim.x) {
      dk[j] = sk[j];
      dv[j] = sv[j];
    }
  }
}

pkv_status launch_move(const pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, void *k, void *v,
                       bool to_pool, cudaStream_t stream) {
  if (n == 0) return PKV_OK;
  const pkv_kv_config &c = pool->config;
  int32_t row_vecs = c.head_dim * pool->elem_bytes / 16;
  int64_t total = (int64_t)n * c.num_kv_heads * row_vecs;
  int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, kMaxBlocks);
  move_tokens_kernel<<<(unsigned)blocks, threads, 0, stream>>>(
      reinterpret_cast<int4 *>(layer_k(pool, layer)), reinterpret_cast<int4 *>(layer_v(pool, layer)),
      static_cast<int4 *>(k), static_cast<int4 *>(v), slots, n, c.num_kv_heads, c.page_size, row_vecs, to_pool);
  PKV_CUDA_TRY(cudaGetLastError());
  return PKV_OK;
}

}  // namespace

pkv_status gpu_scatter_tokens(const pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, const void *k,
                              const void *v, cudaStream_t stream) {
  return launch_move(pool, layer, n, slots, const_cast<void *>(k), const_cast<void *>(v), true, stream);
}

pkv_status gpu_gather_tokens(const pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, void *k, void *v,
                             cudaStream_t stream) {
  return launch_move(pool, layer, n, slots, k, v, false, stream);
}

pkv_status gpu_copy_pages(const pkv_kvpool *pool, PageSpace src, PageSpace dst, int32_t n, const int32_t *src_index,
                          const int32_t *dst_index, cudaStream_t stream) {
  if (n == 0) return PKV_OK;
  int64_t page_vecs = pool->page_elems * pool->elem_bytes / 16;
  const int64_t blocks = std::min<int64_t>((int64_t)n * pool->config.num_layers, kMaxBlocks);
  copy_pages_kernel<<<(unsigned)blocks, 256, 0, stream>>>(src, dst, src_index, dst_index, n, pool->config.num_layers,
                                                          page_vecs);
  PKV_CUDA_TRY(cudaGetLastError());
  return PKV_OK;
}

}  // namespace pkv
