// Engine settings: defaults, validation and resolution. The defaults are the measured best plans and
// kernels (docs/kernels.md): the other values are kept for comparisons and to force the tail or
// claiming onto the small steps of tests and sanitizer runs.
#include "engine_settings.h"

#include "internal.h"

namespace pkv {

pkv_engine_settings default_engine_settings() {
  pkv_engine_settings s{};
  s.size = (int32_t)sizeof(pkv_engine_settings);
  s.math = PKV_MATH_AUTO;
  s.loader = PKV_LOADER_AUTO;
  s.tail_percent = 10;     // 10% pooled as small tasks, about 2 per block
  s.tail_min_splits = 32;  // large steps only: on smaller ones finer tasks do not pay for their fills and merges
  s.tail_end_tiles = 2;    // 1-tile pieces were slower on B8 (per-task cost), 4-tile pieces level with 2
  s.claim_min_tiles = 8;   // at 8 tiles per block or more claiming beat the single even wave by 1-6%
  s.shared_prefix = PKV_SHARED_AUTO;
  return s;
}

pkv_status check_engine_settings(const pkv_engine_settings &s, const char *func) {
  if (s.size != (int32_t)sizeof(pkv_engine_settings))
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: settings.size %d is not sizeof(pkv_engine_settings) = %d (start from pkv_engine_settings_defaults)",
                func, s.size, (int32_t)sizeof(pkv_engine_settings));
  if (s.math < PKV_MATH_AUTO || s.math > PKV_MATH_TENSOR_CORES)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: settings.math %d is not AUTO (0), CUDA_CORES (1) or TENSOR_CORES (2)", func, s.math);
  if (s.loader < PKV_LOADER_AUTO || s.loader > PKV_LOADER_BULK)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: settings.loader %d is not AUTO (0), CP_ASYNC (1) or BULK (2)", func, s.loader);
  if (s.tail_percent < 0 || s.tail_percent > 90)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: settings.tail_percent %d is not in 0..90", func, s.tail_percent);
  const struct {
    const char *name;
    int32_t value;
  } counts[] = {{"tail_min_splits", s.tail_min_splits}, {"tail_end_tiles", s.tail_end_tiles}, {"claim_min_tiles", s.claim_min_tiles}};
  for (const auto &c : counts)
    if (c.value < 0 || c.value > (1 << 20))
      return fail(PKV_ERR_INVALID_ARGUMENT, "%s: settings.%s %d is not in 0..%d", func, c.name, c.value, 1 << 20);
  if (s.shared_prefix < PKV_SHARED_AUTO || s.shared_prefix > PKV_SHARED_ALWAYS)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: settings.shared_prefix %d is not AUTO (0), OFF (1) or ALWAYS (2)", func,
                s.shared_prefix);
  return PKV_OK;
}

pkv_status resolve_decode_body(pkv_engine_settings &s, int32_t head_dim, int32_t cc_major, DecodeBody *body,
                               const char *func) {
  const bool cpu = cc_major == 0;
  if (s.math == PKV_MATH_AUTO) s.math = tensor_cores_support(head_dim) ? PKV_MATH_TENSOR_CORES : PKV_MATH_CUDA_CORES;
  if (s.math == PKV_MATH_TENSOR_CORES && !tensor_cores_support(head_dim))
    return fail(PKV_ERR_UNSUPPORTED, "%s: the tensor-core body serves head dims up to 128, not %d", func, head_dim);
  if (s.loader == PKV_LOADER_AUTO)
    s.loader = s.math == PKV_MATH_TENSOR_CORES && cc_major >= 9 ? PKV_LOADER_BULK : PKV_LOADER_CP_ASYNC;
  if (s.loader == PKV_LOADER_BULK && s.math != PKV_MATH_TENSOR_CORES)
    return fail(PKV_ERR_UNSUPPORTED, "%s: bulk copies serve the tensor-core body only", func);
  if (s.loader == PKV_LOADER_BULK && !cpu && cc_major < 9)
    return fail(PKV_ERR_UNSUPPORTED, "%s: bulk copies need compute capability 9.0 or newer; this GPU has %d.x", func, cc_major);
  *body = DecodeBody{s.math, s.loader};
  return PKV_OK;
}

PlanSettings plan_settings_of(const pkv_engine_settings &s) {
  return PlanSettings{s.tail_percent, s.tail_min_splits, s.tail_end_tiles, s.claim_min_tiles};
}

}  // namespace pkv

extern "C" pkv_status pkv_engine_settings_defaults(pkv_engine_settings *out) {
  PKV_API_BEGIN
  PKV_NOT_NULL(out);
  *out = pkv::default_engine_settings();
  return PKV_OK;
  PKV_API_END
}
