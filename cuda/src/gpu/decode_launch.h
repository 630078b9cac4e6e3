// Host-side entry points of the decode kernels: plain C++ so engine.cpp (compiled as C++) can call them.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "persistentkv.h"

namespace pkv {

// Everything a decode launch reads. Device pointers; `plan` is the device copy of the plan image. The
// CPU executor (decode_cpu.h) reads the same block, with host memory and the host image.
struct DecodeParams {
  const void *k;  // this layer's K pages, HND
  const void *v;
  const int32_t *table;  // device block table
  int64_t table_stride;  // max_pages_per_sequence
  const void *plan;
  const void *q;
  void *out;
  float *lse;               // may be null
  float *partial_o;         // [slot][group][head_dim] fp32, normalised
  float *partial_lse;       // [slot][group], log2 domain
  // [max_batch][num_kv_heads], zero between launches: splits counted << 32 | splits (or a claiming row's
  // tiles) done, so the split that completes the count learns from its one atomic how many slots to merge.
  unsigned long long *merge_counters;
  int32_t *tile_cursors;    // [max_batch][num_kv_heads]: tiles claimed past tok_end (PlanTask), zero between launches
  int32_t *slot_counters;   // [max_batch][num_kv_heads]: partial slots a claiming row's splits took, zero between launches
  int32_t *splits_out;      // [max_batch][num_kv_heads]: a claiming row's splits finished, zero between launches
  int32_t *work_counter;    // persistent ticket counter, zero between launches
  int32_t num_kv_heads;
  int32_t group;       // query heads per KV head, 1..16
  int32_t page_shift;  // log2(page_size)
  float scale_log2;    // sm_scale * log2(e): scores go straight into exp2
};

constexpr int kDecodeStages = 3;

// A task body's two axes, chosen once at engine creation (engine_settings.h resolves AUTO): its math
// (PKV_MATH_CUDA_CORES or PKV_MATH_TENSOR_CORES) and how K and V reach shared memory (PKV_LOADER_CP_ASYNC
// or PKV_LOADER_BULK, the latter with tensor cores on sm_90+ only).
struct DecodeBody {
  int32_t math;
  int32_t loader;
  bool queries = false;  // a plan's rows may ask several queries (decode_rows.cuh): its own instantiations
};
constexpr bool tensor_cores_support(int32_t head_dim) { return head_dim <= 128; }
// FP8 pages take bulk copies (with tensor cores) at head dim 128, whose grouped rows the body reads without
// bank conflicts; other head dims load them with cp.async.
constexpr bool fp8_bulk_support(int32_t head_dim) { return head_dim == 128; }
// Tokens per pipeline stage: 8 KiB of K (and of V) per stage on CUDA cores, 16 KiB on tensor cores.
constexpr int decode_tile_tokens(int head_dim, int32_t math) { return (math == PKV_MATH_TENSOR_CORES ? 8192 : 4096) / head_dim; }
// FP8 pages (1-byte codes) take twice the tokens per stage, the same bytes in flight per block: 8 KiB of
// codes on CUDA cores, 16 KiB (at most 128 tokens, 8 chunks of 16) on tensor cores.
constexpr int fp8_tile_tokens(int head_dim) { return 8192 / head_dim; }
constexpr int fp8_tensor_tile_tokens(int head_dim) { return 16384 / head_dim < 128 ? 16384 / head_dim : 128; }
constexpr int decode_tile_tokens_of(int head_dim, int32_t math, int32_t dtype) {
  if (dtype != PKV_DTYPE_FP8_E4M3 && dtype != PKV_DTYPE_FP8_E4M3_BF16) return decode_tile_tokens(head_dim, math);
  return math == PKV_MATH_TENSOR_CORES ? fp8_tensor_tile_tokens(head_dim) : fp8_tile_tokens(head_dim);
}

// Launches the kernel (PKV_KERNEL_*) over `grid` blocks. Unsupported dtype/head_dim: PKV_ERR_UNSUPPORTED.
// `overlap`: the kernel may start beside the grid before it in the stream, the shared-prefix tasks of a
// sharing step (programmatic_launch.h), and completes only after that grid has.
pkv_status launch_decode(int32_t kernel, DecodeBody body, int32_t dtype, int32_t head_dim, const DecodeParams &p,
                         int32_t grid, cudaStream_t stream, bool overlap = false);
// Resident blocks per multiprocessor of that kernel (the persistent grid is this times the SM count).
pkv_status decode_blocks_per_sm(int32_t kernel, DecodeBody body, int32_t dtype, int32_t head_dim, int32_t *out);

}  // namespace pkv
