// What sharded.cpp (several devices of one host) needs from the decode engine, whose layout stays in
// engine.cpp: one plan built once on the host and installed into the engines of the other shards.
#pragma once
#include "persistentkv.h"

namespace pkv {

// dst's current plan becomes a copy of src's (image, kernel, grid), uploaded to dst's device and its
// deltas applied to pool's device table. src is resolved; dst and pool are handles, resolved here after
// a guard is set: if dst does not get the plan for any reason (a bad handle included), the deltas are
// marked dirty again in src's pool, so the next plan sends them to every shard. Checks that the engines
// plan alike and that pool's table has the shape of src's pool.
pkv_status copy_plan(pkv_decode_engine *src, pkv_decode_engine *dst, pkv_kvpool *pool, pkv_plan_info *info);

}  // namespace pkv
