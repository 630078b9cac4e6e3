// The engine's multi-query buffers (multiquery_state.h).
#include "multiquery_state.h"

#include <algorithm>

namespace pkv {

namespace {

// Grows `*p` (of `kind`) to at least `bytes`; freeing device or pinned memory waits for the GPU, so
// this happens only when a step needs more than any before it.
pkv_status ensure(pkv_runtime *rt, int32_t kind, void **p, int64_t *capacity, int64_t bytes) {
  if (*capacity >= bytes) return PKV_OK;
  const int64_t want = std::max<int64_t>(std::max<int64_t>(bytes, 2 * *capacity), 256);
  void *fresh = nullptr;
  PKV_TRY(raw_alloc(rt, kind, want, &fresh));
  if (on_cuda(rt)) {
    const cudaError_t e = cudaStreamSynchronize(rt->stream);  // runs of the last plan may still read it
    if (e != cudaSuccess) {
      raw_free(rt, kind, fresh);
      return fail_cuda(e, "cudaStreamSynchronize", "multiquery buffers");
    }
  }
  raw_free(rt, kind, *p);
  *p = fresh;
  *capacity = want;
  return PKV_OK;
}

}  // namespace

void free_mq_state(pkv_runtime *rt, MqState *m) {
  if (!m) return;
  const bool cuda = on_cuda(rt);
  if (cuda) cudaStreamSynchronize(rt->stream);
  raw_free(rt, cuda ? PKV_MEM_PINNED : PKV_MEM_DEVICE, m->host);
  if (m->copied) cudaEventDestroy(m->copied);
  if (cuda) raw_free(rt, PKV_MEM_DEVICE, m->device);
  raw_free(rt, PKV_MEM_DEVICE, m->partial);
  if (cuda) raw_free(rt, PKV_MEM_DEVICE, m->io);
  delete m;
}

pkv_status upload_mq_plan(pkv_runtime *rt, MqState &m, int32_t head_dim, int64_t query_tokens, int64_t row_bytes,
                          int64_t lse_row_bytes) {
  const bool cuda = on_cuda(rt);
  const int64_t bytes = mq_plan_bytes(m.plan);
  if (cuda && !m.copied) PKV_CUDA_TRY(cudaEventCreateWithFlags(&m.copied, cudaEventDisableTiming));
  if (m.in_flight) PKV_CUDA_TRY(cudaEventSynchronize(m.copied));
  m.in_flight = false;
  PKV_TRY(ensure(rt, cuda ? PKV_MEM_PINNED : PKV_MEM_DEVICE, &m.host, &m.host_capacity, bytes));
  PKV_TRY(ensure(rt, PKV_MEM_DEVICE, (void **)&m.partial, &m.partial_capacity,
                 std::max<int64_t>(1, m.plan.num_slots) * mq_slot_floats(head_dim) * 4));
  if (cuda) {
    PKV_TRY(ensure(rt, PKV_MEM_DEVICE, &m.device, &m.device_capacity, bytes));
    PKV_TRY(ensure(rt, PKV_MEM_DEVICE, &m.io, &m.io_capacity, query_tokens * (2 * row_bytes + lse_row_bytes)));
  }
  write_mq_image(m.plan, m.host);
  if (cuda) {
    PKV_CUDA_TRY(cudaMemcpyAsync(m.device, m.host, bytes, cudaMemcpyHostToDevice, rt->stream));
    PKV_CUDA_TRY(cudaEventRecord(m.copied, rt->stream));
    m.in_flight = true;
  }
  m.query_tokens = (int32_t)query_tokens;
  return PKV_OK;
}

}  // namespace pkv
