// Engine settings (pkv_engine_settings): the defaults, their validation, and what they resolve to for
// the kernels (a task body: math and loader) and for the planner (PlanSettings).
#pragma once
#include "../gpu/decode_launch.h"
#include "persistentkv.h"
#include "plan.h"

namespace pkv {

// The one place the defaults live.
pkv_engine_settings default_engine_settings();
// Checks every field; `func` prefixes the message.
pkv_status check_engine_settings(const pkv_engine_settings &s, const char *func);
// AUTO resolved for this head dim and device (cc_major 0: the CPU backend); an explicit choice that
// the shape or device cannot run is PKV_ERR_UNSUPPORTED. Writes the resolved math and loader back.
pkv_status resolve_decode_body(pkv_engine_settings &s, int32_t head_dim, int32_t cc_major, DecodeBody *body,
                               const char *func);
PlanSettings plan_settings_of(const pkv_engine_settings &s);

}  // namespace pkv
