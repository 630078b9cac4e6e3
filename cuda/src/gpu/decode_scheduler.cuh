// Task schedulers: which task of the plan a block runs first and next. One interface (initial_work,
// next_work, as FlashAttention 3's tile schedulers have), so the kernel is one loop over any of them.
// Within a task, which K/V tiles it streams is the tile schedule's (decode_pipeline.cuh: a static
// range, or tiles claimed from the (row, head)'s cursor).
#pragma once
#include "../core/plan_image.h"
#include "decode_launch.h"

namespace pkv {

// A task to run (if valid). The index type is each scheduler's own: the block index as is, or the
// ticket arithmetic's int, so the kernel's task addressing compiles as it did in two separate kernels.
template <typename Index>
struct Work {
  Index task;
  bool valid;
};

// Baseline ("FlashInfer-style"): one block per task, grid = tasks.
struct SingleTaskScheduler {
  __device__ __forceinline__ explicit SingleTaskScheduler(const DecodeParams &) {}
  __device__ __forceinline__ Work<unsigned> initial_work() const { return {blockIdx.x, true}; }
  __device__ __forceinline__ Work<unsigned> next_work(Work<unsigned>) const { return {0, false}; }
};

// Persistent: a fixed grid takes tasks from the queue (longest first): block i's first task is task i
// (no round trip before its first copy), later ones come by ticket: task grid + ticket. Every block draws
// exactly one ticket past the end, so the draw numbered tasks - 1 is the launch's last (the grid is at
// most the task count): that block resets the counter for the next launch. The task count is read from
// device memory, so a captured graph stays valid for any plan uploaded into the same buffer.
struct TicketScheduler {
  const DecodeParams &p;
  int num_tasks;
  __device__ __forceinline__ explicit TicketScheduler(const DecodeParams &params)
      : p(params), num_tasks(plan_header(params.plan).num_tasks) {}
  __device__ __forceinline__ Work<int> initial_work() const {
    const int t = blockIdx.x;
    return {t, t < num_tasks};
  }
  __device__ __forceinline__ Work<int> next_work(Work<int>) const {
    __shared__ int s_ticket;
    if (threadIdx.x == 0) {
      const int ticket = atomicAdd(p.work_counter, 1);
      if (ticket == num_tasks - 1) atomicExch(p.work_counter, 0);
      s_ticket = ticket;
    }
    __syncthreads();
    const int t = (int)gridDim.x + s_ticket;
    __syncthreads();
    return {t, t < num_tasks};
  }
};

}  // namespace pkv
