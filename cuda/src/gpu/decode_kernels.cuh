// The decode kernel: a task body (decode_task_cores.cuh or decode_task_tensor.cuh, each with its loader)
// run over the tasks a scheduler hands this block (decode_scheduler.cuh). The baseline kernel is it
// with SingleTaskScheduler, the persistent kernel with TicketScheduler. Launchers: decode_launchers.cuh.
#pragma once
#include "../core/plan_image.h"
#include "decode_launch.h"
#include "decode_scheduler.cuh"
#include "decode_vec.cuh"

namespace pkv {

template <class Body, typename T, class Scheduler>
__global__ void __launch_bounds__(Body::kThreads) decode_kernel(const DecodeParams p) {
  extern __shared__ uint4 smem_raw[];
  grid_launch_dependents();  // a sharing step's combine may place its blocks now; they wait for this grid
  const Scheduler scheduler(p);
  const PlanTask *tasks = plan_tasks(p.plan);
  for (auto w = scheduler.initial_work(); w.valid; w = scheduler.next_work(w))
    Body::run(p, tasks[w.task], reinterpret_cast<T *>(smem_raw));
  // A sharing step launches this grid while its shared-prefix tasks still run (on the multiprocessors
  // they leave free), and the combine waits for this grid alone: no block may complete before the tasks.
  grid_dependency_wait();
}

}  // namespace pkv
