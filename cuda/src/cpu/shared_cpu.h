// CPU backend of the shared-prefix section (shared_image.h): the shared tasks and the combine on host
// memory, with the kernels' slots and arithmetic (fp32, log2 domain), so CPU tests run exactly the
// tasks the plan holds.
#pragma once
#include <cstdint>

#include "../gpu/shared_launch.h"

namespace pkv {

// Every task of p.image: each member's query heads against the task's tokens, into its partial slot.
void cpu_shared_tasks(const ShParams &p, int32_t head_dim, int32_t dtype);
// Every combine of p.image: the row's own out and lse (natural log) merged with its pieces.
void cpu_shared_combine(const ShParams &p, int32_t head_dim, int32_t dtype);

}  // namespace pkv
