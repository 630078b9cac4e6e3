// The engine's shared-prefix buffers (shared_state.h).
#include "shared_state.h"

#include <algorithm>

namespace pkv {

ShCapacity sh_capacity(int32_t max_batch, int32_t num_kv_heads, int32_t wave) {
  // Tasks: the planner aims at two waves; room for four, plus one task per (row, head) for batches of
  // many small nodes. Members: each row in up to four nodes of its chain. Slots: eight pieces per
  // (row, head) on average (a long prefix's splits), which bounds the partials at 8 x the lse rows.
  const int64_t tasks = 4 * (int64_t)wave + (int64_t)max_batch * num_kv_heads;
  const int64_t members = 4 * (int64_t)max_batch;
  const int64_t slots = 8 * (int64_t)max_batch * num_kv_heads;
  auto clamp = [](int64_t v) { return (int32_t)std::min<int64_t>(v, 1 << 30); };
  return ShCapacity{clamp(tasks), clamp(members), clamp(slots), max_batch};
}

pkv_status create_sh_state(pkv_runtime *rt, const ShCapacity &c, int32_t max_batch, int32_t num_qo_heads, int32_t group,
                           int32_t head_dim, ShState **out) {
  const bool cuda = on_cuda(rt);
  auto *s = new ShState();
  s->capacity = c;
  const int64_t image = sh_image_bytes(c.max_tasks, c.max_members, c.max_combines);
  pkv_status st = raw_alloc(rt, cuda ? PKV_MEM_PINNED : PKV_MEM_DEVICE, image, &s->host);
  if (st == PKV_OK && cuda) st = raw_alloc(rt, PKV_MEM_DEVICE, image, &s->device);
  if (st == PKV_OK)
    st = raw_alloc(rt, PKV_MEM_DEVICE, std::max<int64_t>(1, c.max_slots) * sh_slot_floats(group, head_dim) * 4,
                   (void **)&s->partial);
  if (st == PKV_OK) st = raw_alloc(rt, PKV_MEM_DEVICE, (int64_t)max_batch * num_qo_heads * 4, (void **)&s->lse);
  if (st == PKV_OK && cuda) {
    const cudaError_t e = cudaEventCreateWithFlags(&s->copied, cudaEventDisableTiming);
    if (e != cudaSuccess) st = fail_cuda(e, "cudaEventCreate", "shared-prefix buffers");
  }
  if (st != PKV_OK) {
    free_sh_state(rt, s);
    return st;
  }
  *out = s;
  return PKV_OK;
}

void free_sh_state(pkv_runtime *rt, ShState *s) {
  if (!s) return;
  const bool cuda = on_cuda(rt);
  if (cuda) cudaStreamSynchronize(rt->stream);
  raw_free(rt, cuda ? PKV_MEM_PINNED : PKV_MEM_DEVICE, s->host);
  if (s->copied) cudaEventDestroy(s->copied);
  if (cuda) raw_free(rt, PKV_MEM_DEVICE, s->device);
  raw_free(rt, PKV_MEM_DEVICE, s->partial);
  raw_free(rt, PKV_MEM_DEVICE, s->lse);
  delete s;
}

pkv_status upload_sh_plan(pkv_runtime *rt, ShState &s, const ShPlan &plan) {
  if (s.in_flight) PKV_CUDA_TRY(cudaEventSynchronize(s.copied));
  s.in_flight = false;
  write_sh_image(plan, s.host);
  if (on_cuda(rt)) {
    PKV_CUDA_TRY(cudaMemcpyAsync(s.device, s.host, sh_plan_bytes(plan), cudaMemcpyHostToDevice, rt->stream));
    PKV_CUDA_TRY(cudaEventRecord(s.copied, rt->stream));
    s.in_flight = true;
  }
  s.num_tasks = (int32_t)plan.tasks.size();
  return PKV_OK;
}

}  // namespace pkv
