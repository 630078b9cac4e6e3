// What a decode engine keeps for plans with rows of several query tokens: the planner's section (the
// rows the decode kernels do not take), its host and device images, the split partials, and the device
// q/out/lse of runs with host arrays. Created on an engine's first such plan; engine.cpp dispatches to it.
#pragma once
#include <cuda_runtime.h>

#include "internal.h"
#include "multiquery_plan.h"

namespace pkv {

struct MqState {
  MqPlan plan;
  bool active = false;       // the engine's current plan has rows of several query tokens
  int32_t query_tokens = 0;  // of the current plan (the uploaded one; `plan` is the planner's scratch)
  void *host = nullptr;      // the section's image (pinned on CUDA, where it is copied from)
  int64_t host_capacity = 0;
  cudaEvent_t copied = nullptr;  // after the image's copy (CUDA), before the host image is rewritten
  bool in_flight = false;
  void *device = nullptr;  // the device image (CUDA)
  int64_t device_capacity = 0;
  float *partial = nullptr;  // split slots (device memory; host memory on the CPU backend)
  int64_t partial_capacity = 0;
  void *io = nullptr;  // host-array runs on CUDA: every query token's q, out and lse on the device
  int64_t io_capacity = 0;
};

void free_mq_state(pkv_runtime *rt, MqState *m);
// Writes the planned section (m.plan, planned) and sizes every buffer a run of the step's
// `query_tokens` needs: `row_bytes` is one query token's q (or out), `lse_row_bytes` its lse. On CUDA
// the image goes to the device with one async copy on the runtime's stream. Allocates only when a step
// needs more room than any before it.
pkv_status upload_mq_plan(pkv_runtime *rt, MqState &m, int32_t head_dim, int64_t query_tokens, int64_t row_bytes,
                          int64_t lse_row_bytes);
// The image a run reads: the device one on CUDA, the host one on the CPU backend.
inline const void *mq_image(const pkv_runtime *rt, const MqState &m) { return on_cuda(rt) ? m.device : m.host; }
// Whether the current plan's section has tasks (none: every row runs on the decode kernels). The host
// image holds the counts of the device image it was copied to.
inline bool mq_has_tasks(const MqState &m) { return m.active && mq_header(m.host).num_tasks > 0; }

}  // namespace pkv
