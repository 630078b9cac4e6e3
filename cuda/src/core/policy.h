// The adaptive policy: a measured table of kernel choices by (batch, total tokens), with the built-in
// rule deciding wherever calibration found no clear winner (or none was loaded).
#pragma once
#include <cstdint>

#include "persistentkv.h"

namespace pkv {

struct PolicyTable {
  bool loaded = false;
  int8_t choices[PKV_POLICY_BATCH_BUCKETS * PKV_POLICY_TOKEN_BUCKETS];
};

inline int32_t floor_log2(int64_t x) {
  int32_t log = 0;
  while (x > 1) {
    x >>= 1;
    log++;
  }
  return log;
}

// The table's choice for a step, or -1 for "no measured preference".
inline int32_t table_choice(const PolicyTable &table, int32_t batch, int64_t total_tokens) {
  if (!table.loaded) return -1;
  int32_t b = floor_log2(batch < 1 ? 1 : batch);
  if (b > PKV_POLICY_BATCH_BUCKETS - 1) b = PKV_POLICY_BATCH_BUCKETS - 1;
  int32_t t = floor_log2(total_tokens < 1 ? 1 : total_tokens) - PKV_POLICY_MIN_LOG2_TOKENS;
  if (t < 0) t = 0;
  if (t > PKV_POLICY_TOKEN_BUCKETS - 1) t = PKV_POLICY_TOKEN_BUCKETS - 1;
  return table.choices[b * PKV_POLICY_TOKEN_BUCKETS + t];
}

}  // namespace pkv
