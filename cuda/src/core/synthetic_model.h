// The synthetic model's arithmetic, shared by its kernels (gpu/synthetic_model.cu) and its host loops
// (cpu/synthetic_model.cpp): the hash and the table lookups that lib/scheduler/synthetic.ts defines. Both
// executors call these same functions, so the two backends and the TypeScript model agree bit for bit.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "persistentkv.h"

#if defined(__CUDACC__)
#define PKV_HOST_DEVICE __host__ __device__
#else
#define PKV_HOST_DEVICE
#endif

namespace pkv {

constexpr uint32_t kSyntheticTableMask = PKV_SYNTHETIC_TABLE_ENTRIES - 1;
constexpr uint32_t kUnknownTokenKey = 0x40000000u;  // K/V of a token known only by position: keyed by request

// SyntheticModel's mix (murmur3's finaliser folded over the values), in uint32 arithmetic as Math.imul does.
PKV_HOST_DEVICE inline uint32_t synthetic_mix_step(uint32_t h, uint32_t value) {
  h = (h ^ value) * 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  return h ^ (h >> 16);
}
PKV_HOST_DEVICE inline uint32_t synthetic_mix(uint32_t a, uint32_t b, uint32_t c) {
  return synthetic_mix_step(synthetic_mix_step(synthetic_mix_step(0x9e3779b9u, a), b), c);
}
PKV_HOST_DEVICE inline uint32_t synthetic_mix(uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  return synthetic_mix_step(synthetic_mix(a, b, c), d);
}

// Hash of the run of values a row's q reads.
PKV_HOST_DEVICE inline uint32_t synthetic_q_key(const pkv_synthetic_row &row, int32_t layer) {
  return synthetic_mix((uint32_t)row.request_id, (uint32_t)row.position, (uint32_t)layer, 2u);
}
// Hash of the run of values a row's K (which 0) or V (which 1) reads: by token id when known, else by request.
PKV_HOST_DEVICE inline uint32_t synthetic_kv_key(const pkv_synthetic_row &row, int32_t layer, uint32_t which) {
  const uint32_t key = row.token >= 0 ? (uint32_t)row.token : kUnknownTokenKey + (uint32_t)row.request_id;
  return synthetic_mix(key, (uint32_t)row.position, (uint32_t)layer, which);
}
PKV_HOST_DEVICE inline int32_t synthetic_token(const pkv_synthetic_row &row, uint32_t vocab) {
  return (int32_t)(synthetic_mix((uint32_t)row.request_id, (uint32_t)row.position, 3u) % vocab);
}
// Value j of the run that starts at the key's offset (runs wrap at the table's end).
PKV_HOST_DEVICE inline uint16_t synthetic_value(const uint16_t *table, uint32_t key, uint32_t j) {
  return table[(key + j) & kSyntheticTableMask];
}

// Where one layer's K and V go: HND pages (kvpool.h), slots page * page_size + offset.
struct SyntheticKV {
  uint16_t *k;  // layer 0's pages; layer l's start layer_elems * l further
  uint16_t *v;
  int64_t layer_elems;
  int64_t num_slots;  // rows whose slot is outside 0..num_slots-1 are skipped
  int32_t num_kv_heads;
  int32_t head_dim;
  int32_t page_shift;
};

// Element offset of (slot, head, e) within one layer's pages.
PKV_HOST_DEVICE inline int64_t synthetic_kv_offset(const SyntheticKV &kv, int32_t slot, int32_t head, int32_t e) {
  const int64_t page = slot >> kv.page_shift, offset = slot & ((1 << kv.page_shift) - 1);
  return (((page * kv.num_kv_heads + head) << kv.page_shift) + offset) * kv.head_dim + e;
}

struct SyntheticForward {
  const uint16_t *table;
  const pkv_synthetic_row *rows;
  uint16_t *q;
  SyntheticKV kv;
  int32_t batch;
  int32_t layer;
  int32_t q_elems;  // num_qo_heads * head_dim
};

struct SyntheticPrefill {
  const uint16_t *table;
  const pkv_synthetic_row *rows;
  SyntheticKV kv;
  int32_t n;
  int32_t num_layers;
};

struct SyntheticSample {
  const pkv_synthetic_row *rows;
  int32_t *tokens;
  int32_t batch;
  uint32_t vocab;
};

// Kernels on the stream (gpu/synthetic_model.cu) and the CPU backend's loops (cpu/synthetic_model.cpp).
pkv_status gpu_synthetic_forward(const SyntheticForward &p, cudaStream_t stream);
pkv_status gpu_synthetic_prefill(const SyntheticPrefill &p, cudaStream_t stream);
pkv_status gpu_synthetic_sample(const SyntheticSample &p, cudaStream_t stream);
void cpu_synthetic_forward(const SyntheticForward &p);
void cpu_synthetic_prefill(const SyntheticPrefill &p);
void cpu_synthetic_sample(const SyntheticSample &p);

}  // namespace pkv
