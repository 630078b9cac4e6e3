// What sharded.cpp (several devices of one host) needs from the decode engine, whose layout stays in
// engine.cpp: one plan built once on the host and installed into the engines of the other shards.
#pragma once
#include "persistentkv.h"

namespace pkv {

// dst's current plan becomes a copy of src's (image, kernel, grid), uploaded to dst's device and its
// deltas applied to pool's device table; pool_token is pool's handle value (the plan keeps it). Checks
// that the two engines plan alike and that pool's table has the shape of src's pool. If the upload fails,
// the deltas are marked dirty again in src's pool, so the next plan sends them to every shard.
pkv_status copy_plan(pkv_decode_engine *src, pkv_decode_engine *dst, pkv_kvpool *pool, uint64_t pool_token,
                     pkv_plan_info *info);

}  // namespace pkv
