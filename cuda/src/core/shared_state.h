// What a decode engine keeps for plans with a shared-prefix section (shared_image.h): the planner's
// scratch, the section's host and device images, the partial slots and an lse buffer for runs whose
// caller wants no lse (the combine needs the rows' own lse). The buffers are allocated once, on the
// first plan that shares, with capacities fixed by max_batch, so a CUDA graph captured over one sharing
// plan stays valid for every later plan (a plan that would need more shares less). engine.cpp
// dispatches to it.
#pragma once
#include <cuda_runtime.h>

#include "internal.h"
#include "shared_plan.h"

namespace pkv {

struct ShCapacity {
  int32_t max_tasks, max_members, max_slots, max_combines;
};
// The fixed capacities of an engine of `max_batch` rows whose shared tasks run `wave` blocks at once.
ShCapacity sh_capacity(int32_t max_batch, int32_t num_kv_heads, int32_t wave);

struct ShState {
  ShCapacity capacity{};
  bool active = false;       // the engine's current plan has a section
  int32_t num_tasks = 0;     // of the uploaded section
  void *host = nullptr;      // the section's image (pinned on CUDA, where it is copied from)
  cudaEvent_t copied = nullptr;  // after the image's copy, before the host image is rewritten
  bool in_flight = false;
  void *device = nullptr;    // the device image (CUDA)
  float *partial = nullptr;  // the slots (device memory; host memory on the CPU backend)
  float *lse = nullptr;      // [max_batch][Hq] for runs without a caller's lse
};

// Allocates every buffer for the capacities (on the first plan that shares).
pkv_status create_sh_state(pkv_runtime *rt, const ShCapacity &capacity, int32_t max_batch, int32_t num_qo_heads,
                           int32_t group, int32_t head_dim, ShState **out);
void free_sh_state(pkv_runtime *rt, ShState *s);
// Writes `plan` (planned within the capacities) and, on CUDA, copies it to the device image with one
// async copy on the runtime's stream.
pkv_status upload_sh_plan(pkv_runtime *rt, ShState &s, const ShPlan &plan);
// The image a run reads: the device one on CUDA, the host one on the CPU backend.
inline const void *sh_image(const pkv_runtime *rt, const ShState &s) { return on_cuda(rt) ? s.device : s.host; }

}  // namespace pkv
