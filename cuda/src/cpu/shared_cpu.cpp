// Host execution of a plan's shared-prefix section. Scores are in the log2 domain (q . k x scale_log2)
// as in the kernels, so a slot's lse is log2 and the combine converts the rows' natural-log lse.
#include "shared_cpu.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/shared_image.h"
#include "half.h"

namespace pkv {

namespace {
constexpr float kLog2e = 1.4426950408889634f;
}

void cpu_shared_tasks(const ShParams &p, int32_t d, int32_t dtype) {
  const ShHeader &header = sh_header(p.image);
  const ShTask *tasks = sh_tasks(p.image);
  const ShMember *members = sh_members(p.image);
  const int32_t g = p.group, hq = p.num_kv_heads * g, page_size = 1 << p.page_shift;
  const int64_t slot_floats = sh_slot_floats(g, d);
  const auto *kp = static_cast<const uint16_t *>(p.k), *vp = static_cast<const uint16_t *>(p.v);
  const auto *qp = static_cast<const uint16_t *>(p.q);
  std::vector<float> q(d), o(d), scores;
  for (int32_t ti = 0; ti < header.num_tasks; ti++) {
    const ShTask &t = tasks[ti];
    const int32_t *entries = p.table + (int64_t)t.table_row * p.table_stride;
    // Element offset of token `tok` of the task's KV head.
    auto token_at = [&](int32_t tok) {
      const int64_t page = entries[tok >> p.page_shift];
      return ((page * p.num_kv_heads + t.head) * page_size + (tok & (page_size - 1))) * d;
    };
    scores.resize(std::max(0, t.kv_end - t.kv_begin));
    for (int32_t i = 0; i < t.member_count; i++) {
      const ShMember &m = members[t.member_first + i];
      float *slot = p.partial + (m.slot_base + (int64_t)t.piece * p.num_kv_heads + t.head) * slot_floats;
      for (int32_t y = 0; y < g; y++) {
        const int64_t qo = ((int64_t)m.row * hq + (int64_t)t.head * g + y) * d;
        for (int32_t e = 0; e < d; e++) q[e] = load_half(dtype, qp[qo + e]) * p.scale_log2;
        float mx = -INFINITY;
        for (int32_t tok = t.kv_begin; tok < t.kv_end; tok++) {
          const uint16_t *k = kp + token_at(tok);
          float s = 0.f;
          for (int32_t e = 0; e < d; e++) s += q[e] * load_half(dtype, k[e]);
          scores[tok - t.kv_begin] = s;
          mx = std::fmax(mx, s);
        }
        float l = 0.f;
        std::fill(o.begin(), o.end(), 0.f);
        for (int32_t tok = t.kv_begin; tok < t.kv_end; tok++) {
          const float w = std::exp2(scores[tok - t.kv_begin] - mx);
          l += w;
          const uint16_t *v = vp + token_at(tok);
          for (int32_t e = 0; e < d; e++) o[e] += w * load_half(dtype, v[e]);
        }
        for (int32_t e = 0; e < d; e++) slot[(int64_t)y * d + e] = l > 0.f ? o[e] / l : 0.f;
        slot[(int64_t)g * d + y] = l > 0.f ? mx + std::log2(l) : -INFINITY;
      }
    }
  }
}

void cpu_shared_combine(const ShParams &p, int32_t d, int32_t dtype) {
  const ShHeader &header = sh_header(p.image);
  const ShCombine *combines = sh_combines(p.image);
  const int32_t g = p.group, hq = p.num_kv_heads * g;
  const int64_t slot_floats = sh_slot_floats(g, d);
  auto *op = static_cast<uint16_t *>(p.out);
  std::vector<float> o(d);
  for (int32_t ci = 0; ci < header.num_combines; ci++) {
    const ShCombine &c = combines[ci];
    for (int32_t h = 0; h < p.num_kv_heads; h++)
      for (int32_t y = 0; y < g; y++) {
        const int64_t qo_row = (int64_t)c.row * hq + (int64_t)h * g + y;
        auto slot_of = [&](int32_t piece) { return p.partial + (c.slot_base + (int64_t)piece * p.num_kv_heads + h) * slot_floats; };
        const float own = p.lse[qo_row] * kLog2e;
        float mx = own;
        for (int32_t s = 0; s < c.pieces; s++) mx = std::fmax(mx, slot_of(s)[(int64_t)g * d + y]);
        const float w_own = std::exp2(own - mx);
        float sum = w_own;
        for (int32_t e = 0; e < d; e++) o[e] = w_own * load_half(dtype, op[qo_row * d + e]);
        for (int32_t s = 0; s < c.pieces; s++) {
          const float *slot = slot_of(s);
          const float lse = slot[(int64_t)g * d + y];
          if (lse == -INFINITY) continue;
          const float w = std::exp2(lse - mx);
          sum += w;
          for (int32_t e = 0; e < d; e++) o[e] += w * slot[(int64_t)y * d + e];
        }
        for (int32_t e = 0; e < d; e++) op[qo_row * d + e] = store_half(dtype, o[e] / sum);
        p.lse[qo_row] = (mx + std::log2(sum)) / kLog2e;
      }
  }
}

}  // namespace pkv
