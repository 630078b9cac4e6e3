// Host loops of the synthetic model (CPU backend): the same functions of core/synthetic_model.h that the
// kernels call, over host memory standing in for device memory.
#include "../core/synthetic_model.h"

namespace pkv {

namespace {

// K (which 0) or V (which 1) of one row in one layer, into its slot's place in the pages.
void write_kv_row(const uint16_t *table, const SyntheticKV &kv, const pkv_synthetic_row &row, int32_t layer,
                  uint32_t which) {
  if (row.slot < 0 || row.slot >= kv.num_slots) return;
  uint16_t *pages = (which == 0 ? kv.k : kv.v) + kv.layer_elems * layer;
  const uint32_t key = synthetic_kv_key(row, layer, which);
  for (int32_t h = 0, j = 0; h < kv.num_kv_heads; h++) {
    uint16_t *dst = pages + synthetic_kv_offset(kv, row.slot, h, 0);
    for (int32_t e = 0; e < kv.head_dim; e++, j++) dst[e] = synthetic_value(table, key, (uint32_t)j);
  }
}

}  // namespace

void cpu_synthetic_forward(const SyntheticForward &p) {
  for (int32_t r = 0; r < p.batch; r++) {
    const pkv_synthetic_row row = p.rows[r];
    const uint32_t key = synthetic_q_key(row, p.layer);
    uint16_t *q = p.q + (int64_t)r * p.q_elems;
    for (int32_t j = 0; j < p.q_elems; j++) q[j] = synthetic_value(p.table, key, (uint32_t)j);
    write_kv_row(p.table, p.kv, row, p.layer, 0);
    write_kv_row(p.table, p.kv, row, p.layer, 1);
  }
}

void cpu_synthetic_prefill(const SyntheticPrefill &p) {
  for (int32_t t = 0; t < p.n; t++)
    for (int32_t layer = 0; layer < p.num_layers; layer++) {
      write_kv_row(p.table, p.kv, p.rows[t], layer, 0);
      write_kv_row(p.table, p.kv, p.rows[t], layer, 1);
    }
}

void cpu_synthetic_sample(const SyntheticSample &p) {
  for (int32_t r = 0; r < p.batch; r++) p.tokens[r] = synthetic_token(p.rows[r], p.vocab);
}

}  // namespace pkv
