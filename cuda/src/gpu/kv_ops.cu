// KV pool data movement on the GPU: token scatter (writeKV), gather (readKV) and page copies
// (copy-on-write, swap to and from mapped pinned memory). 16-bit pages move in 16-byte vectors: a head row
// is head_dim * 2 bytes, a multiple of 128, and pages are 256-byte aligned. FP8 pages (kv_format.h) are
// written a warp per (token, head) row, quantized with the hardware's cvt.rn.satfinite (the CPU backend's
// float_to_e4m3 gives the same bits), and whole pages (codes, scales, padding) copy in 16-byte vectors.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>

#include "../core/kv_format.h"
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

template <typename T> struct Value;
template <> struct Value<__half> {
  static __device__ __forceinline__ float load(const __half *p) { return __half2float(*p); }
  static __device__ __forceinline__ void store(__half *p, float f) { *p = __float2half_rn(f); }
};
template <> struct Value<__nv_bfloat16> {
  static __device__ __forceinline__ float load(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
  static __device__ __forceinline__ void store(__nv_bfloat16 *p, float f) { *p = __float2bfloat16_rn(f); }
};

// Where one FP8 (token, head) row lives: its codes and its scale in a layer of pages.
struct Fp8Row {
  uint8_t *codes;
  float *scale;
};
__device__ __forceinline__ Fp8Row fp8_row(char *layer, int64_t slot, int32_t h, int32_t heads, int32_t page_size,
                                          int32_t d, int64_t page_bytes, int64_t code_bytes) {
  const int64_t page = slot / page_size, row = (int64_t)h * page_size + slot % page_size;
  char *base = layer + page * page_bytes;
  return {reinterpret_cast<uint8_t *>(base) + row * d, reinterpret_cast<float *>(base + code_bytes) + row};
}

struct Fp8Pages {
  char *k, *v;
  int32_t heads, page_size, d;
  int64_t page_bytes, code_bytes;
  __device__ __forceinline__ Fp8Row row(char *layer, int64_t slot, int32_t h) const {
    return fp8_row(layer, slot, h, heads, page_size, d, page_bytes, code_bytes);
  }
};

// A warp per (token, head) row, grid-stride: amax by shuffles, then the row's codes and scale (kv_format.h).
template <typename T>
__global__ void quantize_tokens_kernel(Fp8Pages pages, const T *__restrict__ k, const T *__restrict__ v,
                                       const int32_t *__restrict__ slots, int32_t n) {
  const int lane = threadIdx.x & 31;
  const int64_t rows = (int64_t)n * pages.heads, warps = (int64_t)gridDim.x * (blockDim.x / 32);
  for (int64_t r = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32; r < rows; r += warps) {
    const int32_t t = (int32_t)(r / pages.heads), h = (int32_t)(r % pages.heads);
    for (int kv = 0; kv < 2; kv++) {
      const T *src = (kv ? v : k) + r * pages.d;
      float amax = 0.f;
      for (int i = lane; i < pages.d; i += 32) amax = fmaxf(amax, fabsf(Value<T>::load(src + i)));
#pragma unroll
      for (int off = 16; off > 0; off /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
      const float factor = fp8_factor_of(amax);
      const Fp8Row dst = pages.row(kv ? pages.v : pages.k, slots[t], h);
      for (int i = lane; i < pages.d; i += 32)
        dst.codes[i] = __nv_cvt_float_to_fp8(Value<T>::load(src + i) * factor, __NV_SATFINITE, __NV_E4M3);
      if (lane == 0) *dst.scale = fp8_scale_of(amax);
    }
  }
}

// The reverse: code * scale, rounded to the value type (values != nullptr), or the stored form itself.
template <typename T>
__global__ void dequantize_tokens_kernel(Fp8Pages pages, T *__restrict__ k, T *__restrict__ v, uint8_t *__restrict__ k_codes,
                                         uint8_t *__restrict__ v_codes, float *__restrict__ k_scales,
                                         float *__restrict__ v_scales, const int32_t *__restrict__ slots, int32_t n) {
  const int lane = threadIdx.x & 31;
  const int64_t rows = (int64_t)n * pages.heads, warps = (int64_t)gridDim.x * (blockDim.x / 32);
  for (int64_t r = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32; r < rows; r += warps) {
    const int32_t t = (int32_t)(r / pages.heads), h = (int32_t)(r % pages.heads);
    for (int kv = 0; kv < 2; kv++) {
      const Fp8Row src = pages.row(kv ? pages.v : pages.k, slots[t], h);
      const float scale = *src.scale;
      if (k) {
        T *dst = (kv ? v : k) + r * pages.d;
        for (int i = lane; i < pages.d; i += 32) {
          const __half h16 = __half(__nv_cvt_fp8_to_halfraw(src.codes[i], __NV_E4M3));
          Value<T>::store(dst + i, __half2float(h16) * scale);
        }
      } else {
        uint8_t *codes = (kv ? v_codes : k_codes) + r * pages.d;
        for (int i = lane; i < pages.d; i += 32) codes[i] = src.codes[i];
        if (lane == 0) (kv ? v_scales : k_scales)[r] = scale;
      }
    }
  }
}

Fp8Pages fp8_pages(const pkv_kvpool *pool, int32_t layer) {
  const pkv_kv_config &c = pool->config;
  return {layer_k(pool, layer), layer_v(pool, layer), c.num_kv_heads, c.page_size, c.head_dim, pool->page_bytes,
          pool->code_bytes};
}

int64_t fp8_blocks(const pkv_kvpool *pool, int32_t n) {
  return std::min<int64_t>(((int64_t)n * pool->config.num_kv_heads + 7) / 8, kMaxBlocks);  // 8 warps a block
}

pkv_status launch_fp8_move(const pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, void *k, void *v,
                           bool to_pool, cudaStream_t stream) {
  const Fp8Pages pages = fp8_pages(pool, layer);
  const unsigned blocks = (unsigned)fp8_blocks(pool, n);
  auto run = [&](auto type) {
    using T = decltype(type);
    if (to_pool)
      quantize_tokens_kernel<T><<<blocks, 256, 0, stream>>>(pages, static_cast<const T *>(k), static_cast<const T *>(v), slots, n);
    else
      dequantize_tokens_kernel<T><<<blocks, 256, 0, stream>>>(pages, static_cast<T *>(k), static_cast<T *>(v), nullptr,
                                                             nullptr, nullptr, nullptr, slots, n);
  };
  if (value_dtype(pool->config.dtype) == PKV_DTYPE_BF16) run(__nv_bfloat16{});
  else run(__half{});
  PKV_CUDA_TRY(cudaGetLastError());
  return PKV_OK;
}

pkv_status launch_move(const pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, void *k, void *v,
                       bool to_pool, cudaStream_t stream) {
  if (n == 0) return PKV_OK;
  if (is_fp8(pool->config.dtype)) return launch_fp8_move(pool, layer, n, slots, k, v, to_pool, stream);
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

pkv_status gpu_gather_raw(const pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, uint8_t *k_codes,
                          uint8_t *v_codes, float *k_scales, float *v_scales, cudaStream_t stream) {
  if (n == 0) return PKV_OK;
  dequantize_tokens_kernel<__half><<<(unsigned)fp8_blocks(pool, n), 256, 0, stream>>>(
      fp8_pages(pool, layer), nullptr, nullptr, k_codes, v_codes, k_scales, v_scales, slots, n);
  PKV_CUDA_TRY(cudaGetLastError());
  return PKV_OK;
}

pkv_status gpu_copy_pages(const pkv_kvpool *pool, PageSpace src, PageSpace dst, int32_t n, const int32_t *src_index,
                          const int32_t *dst_index, cudaStream_t stream) {
  if (n == 0) return PKV_OK;
  int64_t page_vecs = pool->page_bytes / 16;
  const int64_t blocks = std::min<int64_t>((int64_t)n * pool->config.num_layers, kMaxBlocks);
  copy_pages_kernel<<<(unsigned)blocks, 256, 0, stream>>>(src, dst, src_index, dst_index, n, pool->config.num_layers,
                                                          page_vecs);
  PKV_CUDA_TRY(cudaGetLastError());
  return PKV_OK;
}

}  // namespace pkv
