// Host-side entry points of the shared-prefix kernels (plain C++ for engine code), and what they read.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "persistentkv.h"

namespace pkv {

// Everything the shared tasks and the combine read; the CPU executor (shared_cpu.h) reads the same block
// with host memory. `image` is the plan's shared section (shared_image.h).
struct ShParams {
  const void *k;  // this layer's K pages, HND
  const void *v;
  const int32_t *table;
  int64_t table_stride;
  const void *image;
  const void *q;    // decode rows' q: [batch][Hq][d]
  void *out;        // decode rows' out: the decode kernels' result, which the combine rewrites
  float *lse;       // [batch][Hq], natural log: the decode kernels' lse, which the combine rewrites (never null)
  float *partial;   // the tasks' slots, sh_slot_floats(group, head_dim) each
  int32_t num_kv_heads;
  int32_t group;
  int32_t page_shift;
  float scale_log2;  // sm_scale * log2(e)
};

// Which kernel computes the shared tasks: mma.sync (shared_tasks.cuh), or warpgroup MMAs
// (shared_tasks_wgmma.cuh) on Hopper for head dims up to 128 when `warpgroup` asks for them. The
// library's Hopper code is sm_90a, which runs on compute capability 9.0 only. The warpgroup kernel is
// the default there; PKV_SHARED_KERNEL=mma (read at engine creation) keeps mma.sync, for comparisons.
enum class ShKernel : int32_t { kMma = 0, kWarpgroup = 1 };
inline ShKernel shared_kernel_for(int32_t cc_major, int32_t cc_minor, int32_t head_dim, bool warpgroup) {
  return warpgroup && cc_major == 9 && cc_minor == 0 && head_dim <= 128 ? ShKernel::kWarpgroup : ShKernel::kMma;
}

// The kernel as the planner's cost model sees it (ShPlanShape): its tensor-core rate on long tasks, in
// FLOPs per microsecond measured on the H200 (mma.sync about 190 TFLOP/s; the warpgroup kernel 320-370,
// bench/results/shared-*), and the query rows it computes a member tile in.
struct ShKernelModel {
  double flops_per_us;
  int32_t row_tile;
};
inline ShKernelModel shared_kernel_model(ShKernel kernel) {
  return kernel == ShKernel::kWarpgroup ? ShKernelModel{320e6, 64} : ShKernelModel{190e6, 16};
}

// Both launches read their counts from the device image, so a captured graph stays valid for every
// later plan whose section fits the same buffers: `grid` is fixed per engine (shared_grid).
// The tasks: before the decode kernels (they do not depend on them). Blocks stride over the tasks.
pkv_status launch_shared_tasks(int32_t dtype, int32_t head_dim, ShKernel kernel, const ShParams &p, int32_t grid,
                               cudaStream_t stream);
// The combine: after the decode kernels. Blocks of kShCombineThreads stride over the (combine row, query
// head) pairs, a thread per 16-byte output chunk. `overlap`: its blocks may be placed while the decode
// kernel runs (programmatic_launch.h); they wait for it first.
constexpr int32_t kShCombineThreads = 128;
pkv_status launch_shared_combine(int32_t dtype, int32_t head_dim, const ShParams &p, int32_t grid, cudaStream_t stream,
                                 bool overlap = false);
// Resident blocks of the task kernel per multiprocessor (the engine's shared grid is this times the SMs).
pkv_status shared_blocks_per_sm(int32_t dtype, int32_t head_dim, ShKernel kernel, int32_t *out);

}  // namespace pkv
