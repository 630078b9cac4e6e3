// The decode engine: plan once per step (workqueue + block-table deltas, one async upload, no GPU wait),
// run once per layer on either kernel (CUDA) or the host executor (CPU backend).
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../cpu/decode_cpu.h"
#include "../gpu/decode_launch.h"
#include "checked.h"
#include "../gpu/table_deltas.h"
#include "engine_settings.h"
#include "internal.h"
#include "kvpool.h"
#include "multiquery_state.h"
#include "../cpu/multiquery_cpu.h"
#include "../gpu/multiquery_launch.h"
#include "../cpu/shared_cpu.h"
#include "../gpu/shared_launch.h"
#include "plan.h"
#include "policy.h"
#include "shape.h"
#include "sharded.h"
#include "shared_state.h"

namespace {

// Plan images are staged in pinned memory, two of them, so building step N+1 never waits for step N's
// copy; the host waits on an event only if the image it is about to overwrite is still being copied.
struct Staging {
  void *host = nullptr;
  int64_t capacity = 0;
  cudaEvent_t copied = nullptr;
  bool in_flight = false;
};

// The CPU backend has no occupancy to ask; plan as if for an H100 (132 SMs x 3 blocks) so CPU tests
// exercise the same splits the GPU will see.
constexpr int32_t kCpuWave = 396;
constexpr int32_t kMinSplitTokens = 128;  // measured: 64-token splits were slower at 512-2048 tokens
constexpr int32_t kDeltaReserve = 4096;  // table entries one step uploads with the plan in one copy
constexpr int32_t kMaxBatch = 1 << 20;  // rows are packed into 20 bits of the planner's sort key
// No multi-query split shorter: a split writes and re-reads 64 rows of fp32 partials.
constexpr int32_t kMinMqSplitTokens = 256;

}  // namespace

struct pkv_decode_engine {
  pkv_runtime *rt;
  pkv_decode_config cfg;
  int32_t group;
  int32_t page_shift;
  pkv::PlanShape shape;
  int32_t persistent_grid;
  int64_t max_tasks;
  pkv_engine_settings settings;  // as given, with AUTO resolved
  pkv::DecodeBody body;           // the task body of this engine's kernels
  pkv::DecodeBody short_body;     // the body of plans whose rows are all short (fp8_short_body)
  pkv::DecodeBody run_body;       // the current plan's: body or short_body
  pkv::PlanSettings plan_settings;
  pkv::PolicyTable policy;  // calibrated choices for the adaptive policy

  Staging staging[2];
  int32_t next_staging;
  // One device image that never moves (sized at creation for max_batch rows, the most tasks and
  // kDeltaReserve deltas), so a graph captured over one plan stays valid for later plans. A step with
  // more deltas than that (a long prompt's first upload) sends the overflow to `deltas_device` instead.
  void *plan_device;
  int64_t plan_device_capacity;
  void *deltas_device;
  int64_t deltas_device_capacity;
  float *partial_o;
  float *partial_lse;
  // Per (row, head), zero between launches, in one allocation (merge_counters owns it): splits counted
  // and splits (or a claiming row's tiles) done, packed in one word (DecodeParams), and a claiming row's
  // tile cursor, partial slots taken and splits finished.
  unsigned long long *merge_counters;
  int32_t *tile_cursors;
  int32_t *slot_counters;
  int32_t *splits_out;
  int32_t *work_counter;
  void *io_device;  // q, out and lse staging for runs with host arrays (allocated on first use)
  cudaEvent_t plan_ready;  // on the runtime's stream after the current plan's upload (recorded lazily)
  bool plan_ready_recorded;
  cudaEvent_t foreign_runs_done;
  bool foreign_runs;

  // The current plan.
  int32_t plan_id;
  void *plan_host;  // its image (CPU backend executes from it)
  pkv_kvpool *pool;
  // The pool's token, resolved again by every run: a destroyed pool (even one whose address a new pool
  // took) makes the plan unrunnable. 0 while no plan is complete (none made, or the last one failed).
  uint64_t pool_token;
  int32_t kernel;
  int32_t batch;
  int32_t num_tasks;
  int32_t num_deltas;
  int32_t grid;
  pkv::MqState *mq = nullptr;  // plans with rows of several query tokens (multiquery_state.h)
  int32_t mq_wide_wave = 0;    // resident blocks of the wide multi-query kernel (0: none for this shape)
  // Rows of several queries (q_len x group <= 16) on the decode kernels: whether this engine's body
  // takes them (the tensor-core one, 16-bit pages). Their splits take q_len slots of `group` partial
  // rows each, so the partials hold 16 rows per task (else `group`): a graph captured over any plan
  // replays with the buffers of any later one.
  bool decode_queries = false;
  int64_t partial_rows = 0;
  // Shared-prefix sections (shared_state.h): the blocks of each shared launch (0: this engine never
  // shares: FP8 pages, mode OFF), the planner's scratch and, from the first plan that shares, the buffers.
  int32_t shared_grid = 0;
  pkv::ShKernel shared_kernel = pkv::ShKernel::kMma;
  bool shared_overlap = false;  // a sharing step's later kernels launch programmatically (compute capability 9.0+)
  int32_t combine_grid = 0;  // the combine's blocks: one thread per 16-byte output chunk of the largest batch
  pkv::ShCapacity sh_capacity{};
  pkv::ShPlan sh_plan;
  pkv::ShState *sh = nullptr;
};

namespace {

using pkv::fail;

void free_engine(pkv_decode_engine *e) {
  pkv_runtime *rt = e->rt;
  bool cuda = pkv::on_cuda(rt);
  if (cuda) cudaStreamSynchronize(rt->stream);
  for (Staging &s : e->staging) {
    pkv::raw_free(rt, PKV_MEM_PINNED, s.host);
    if (s.copied) cudaEventDestroy(s.copied);
  }
  if (cuda) pkv::raw_free(rt, PKV_MEM_DEVICE, e->plan_device);
  if (cuda) pkv::raw_free(rt, PKV_MEM_DEVICE, e->deltas_device);
  pkv::raw_free(rt, PKV_MEM_DEVICE, e->partial_o);
  pkv::raw_free(rt, PKV_MEM_DEVICE, e->partial_lse);
  pkv::raw_free(rt, PKV_MEM_DEVICE, e->merge_counters);
  pkv::raw_free(rt, PKV_MEM_DEVICE, e->work_counter);
  pkv::raw_free(rt, PKV_MEM_DEVICE, e->io_device);
  if (e->plan_ready) cudaEventDestroy(e->plan_ready);
  if (e->foreign_runs_done) cudaEventDestroy(e->foreign_runs_done);
  pkv::free_mq_state(rt, e->mq);
  pkv::free_sh_state(rt, e->sh);
  delete e;
}

void destroy_engine(void *object) {
  auto *e = static_cast<pkv_decode_engine *>(object);
  pkv::disown(e->rt, e);
  free_engine(e);
}

pkv_status check_config(const pkv_decode_config *c) {
  PKV_TRY(pkv::check_shape("pkv_decode_engine_create", c->num_qo_heads, c->num_kv_heads, c->head_dim, c->page_size,
                           c->dtype));
  if (c->policy < PKV_POLICY_BASELINE || c->policy > PKV_POLICY_ADAPTIVE)
    return fail(PKV_ERR_INVALID_ARGUMENT, "pkv_decode_engine_create: policy %d is not BASELINE (0), PERSISTENT (1) or ADAPTIVE (2)",
                c->policy);
  if (c->max_batch < 1 || c->max_batch > kMaxBatch)
    return fail(PKV_ERR_INVALID_ARGUMENT, "pkv_decode_engine_create: max_batch %d is not in 1..%d", c->max_batch, kMaxBatch);
  if (!(c->sm_scale >= 0.f) || std::isinf(c->sm_scale))
    return fail(PKV_ERR_INVALID_ARGUMENT, "pkv_decode_engine_create: sm_scale %g is not a finite value >= 0", c->sm_scale);
  return PKV_OK;
}

// An engine made for a pool states the shape once: the pool's KV heads, head dim, page size and dtype.
// `pool` is a handle; it is resolved in place here.
pkv_status shape_from_pool(pkv_runtime *rt, pkv_kvpool *&pool, pkv_decode_config *c, const char *func) {
  PKV_TRY(pkv::resolve(pool, pkv::Kind::KvPool, func, "pool"));
  if (pool->rt != rt) return fail(PKV_ERR_INVALID_ARGUMENT, "%s: the pool belongs to another runtime", func);
  const pkv_kv_config &p = pool->config;
  c->num_kv_heads = p.num_kv_heads, c->head_dim = p.head_dim, c->page_size = p.page_size, c->dtype = p.dtype;
  return PKV_OK;
}

// Grows a staging image (pinned). Freeing pinned memory synchronises the device, so this happens only
// when a step needs more room than any step before it.
pkv_status ensure_staging(pkv_decode_engine *e, Staging &s, int64_t bytes) {
  if (s.capacity >= bytes) return PKV_OK;
  int64_t want = std::max<int64_t>(bytes, s.capacity * 2);
  void *p = nullptr;
  PKV_TRY(pkv::raw_alloc(e->rt, PKV_MEM_PINNED, want, &p));
  if (s.in_flight) PKV_CUDA_TRY(cudaEventSynchronize(s.copied));
  s.in_flight = false;
  pkv::raw_free(e->rt, PKV_MEM_PINNED, s.host);
  s.host = p;
  s.capacity = want;
  return PKV_OK;
}

// Grows the overflow delta buffer; cudaFree waits for the device, so only a step with more new table
// entries than any before it pays this.
pkv_status ensure_deltas_device(pkv_decode_engine *e, int64_t bytes) {
  if (e->deltas_device_capacity >= bytes) return PKV_OK;
  int64_t want = std::max<int64_t>(bytes, e->deltas_device_capacity * 2);
  void *p = nullptr;
  PKV_TRY(pkv::raw_alloc(e->rt, PKV_MEM_DEVICE, want, &p));
  PKV_CUDA_TRY(cudaStreamSynchronize(e->rt->stream));
  pkv::raw_free(e->rt, PKV_MEM_DEVICE, e->deltas_device);
  e->deltas_device = p;
  e->deltas_device_capacity = want;
  return PKV_OK;
}

// The adaptive rule: the calibrated table's choice where calibration found a clear winner; elsewhere this
// built-in rule, read off the H100 measurements (docs/kernels.md, "The adaptive policy"): the persistent kernel when rows are many (half a wave of (row, head) pairs or
// more: its queue balances them, the one-block-per-task grid does not), when a long step is skewed
// (longest row over twice the mean, 64K tokens or more), or when the step is large; the baseline
// otherwise (short steps: its launch is a little cheaper and its splits are as even).
int32_t adaptive_kernel(const pkv_decode_engine *e, int32_t batch, int64_t total, int64_t longest) {
  const int32_t measured = pkv::table_choice(e->policy, batch, total);
  if (measured >= 0) return measured;
  if (2 * (int64_t)batch * e->cfg.num_kv_heads >= e->shape.wave) return PKV_KERNEL_PERSISTENT;
  if (total >= 65536 && longest * batch > 2 * total) return PKV_KERNEL_PERSISTENT;
  // At 16 tiles per block or more its planner claims or pools a tail, which an even split cannot: v8
  // measured 1-3% faster than the baseline on such steps (b8-uniform, b4-long, b1 64K-128K).
  if (total / e->shape.tile_tokens * e->cfg.num_kv_heads >= 16 * (int64_t)e->shape.wave) return PKV_KERNEL_PERSISTENT;
  return PKV_KERNEL_BASELINE;
}

// FP8 pages have both bodies (tensor cores for head dims up to 128, as for 16-bit pages) and take bulk
// copies at head dim 128 (fp8_bulk_support; resolve_decode_body decides as for 16-bit pages); at other head
// dims AUTO resolves to cp.async, and a request for bulk copies is refused rather than changed.
pkv_status fp8_loader(pkv_engine_settings &s, int32_t dtype, int32_t head_dim, const char *func) {
  if (!pkv::is_fp8(dtype) || pkv::fp8_bulk_support(head_dim)) return PKV_OK;
  if (s.loader == PKV_LOADER_BULK)
    return fail(PKV_ERR_UNSUPPORTED,
                "%s: FP8 pages (dtype %d) at head dim %d load with cp.async only; use loader AUTO or CP_ASYNC", func,
                dtype, head_dim);
  s.loader = PKV_LOADER_CP_ASYNC;
  return PKV_OK;
}

// FP8 pages at head dim 128 with the loader left to AUTO: bulk copies are faster on long rows, cp.async on
// steps whose rows are all short (measured on the H200: b256-short, rows of 64-1021 tokens, 112 against
// 121 us; a single row of 4096 tokens 13.2 against 14.7 us; from 16K tokens on bulk copies win). Plans
// whose longest row has at most kFp8ShortRowTokens take the cp.async body where its kernels are resident
// as many blocks per SM as the bulk body's (the persistent grid is sized for the engine's body); either
// body computes the same plan.
constexpr int32_t kFp8ShortRowTokens = 4096;
pkv_status fp8_short_body(const pkv_decode_engine *e, bool loader_auto, pkv::DecodeBody *out) {
  *out = e->body;
  if (!loader_auto || !pkv::is_fp8(e->cfg.dtype) || e->body.loader != PKV_LOADER_BULK || !pkv::on_cuda(e->rt))
    return PKV_OK;
  const pkv::DecodeBody cp{e->body.math, PKV_LOADER_CP_ASYNC};
  for (const int32_t kernel : {PKV_KERNEL_BASELINE, PKV_KERNEL_PERSISTENT}) {
    int32_t bulk_bps = 0, cp_bps = 0;
    PKV_TRY(pkv::decode_blocks_per_sm(kernel, e->body, e->cfg.dtype, e->cfg.head_dim, &bulk_bps));
    PKV_TRY(pkv::decode_blocks_per_sm(kernel, cp, e->cfg.dtype, e->cfg.head_dim, &cp_bps));
    if (cp_bps != bulk_bps) return PKV_OK;
  }
  *out = cp;
  return PKV_OK;
}

pkv_status check_pool(const pkv_decode_engine *e, const pkv_kvpool *pool, const char *func) {
  const pkv_kv_config &p = pool->config;
  const pkv_decode_config &c = e->cfg;
  if (pool->rt != e->rt) return fail(PKV_ERR_INVALID_ARGUMENT, "%s: the pool belongs to another runtime", func);
  if (p.num_kv_heads != c.num_kv_heads || p.head_dim != c.head_dim || p.page_size != c.page_size || p.dtype != c.dtype)
    return fail(PKV_ERR_INVALID_ARGUMENT,
                "%s: pool shape (kv heads %d, head dim %d, page size %d, dtype %d) differs from the engine's "
                "(kv heads %d, head dim %d, page size %d, dtype %d)",
                func, p.num_kv_heads, p.head_dim, p.page_size, p.dtype, c.num_kv_heads, c.head_dim, c.page_size,
                c.dtype);
  return PKV_OK;
}

// What one pass over the batch learns: the deltas to upload, and the sums the policy and the info need.
struct BatchSummary {
  int64_t num_deltas = 0;
  int64_t total_tokens = 0;  // < 2^20 rows x 2^31 tokens
  int64_t longest = 0;
  int32_t dirty_rows = 0;  // rows with deltas
};

// Checks rows, lengths and the dirty page ids, counts the deltas and sums the lengths, in one pass (the
// plan's host cost is mostly passes over the batch). Nothing is modified, so a failed plan leaves the
// pool's table and dirty marks as they were. Page sizes are powers of two: pages by shift, not division.
pkv_status check_batch(const pkv_kvpool *pool, int32_t batch, const int32_t *rows, const int32_t *seq_lens,
                       BatchSummary *out) {
  const pkv_kv_config &pc = pool->config;
  const int64_t max_len = (int64_t)pc.max_pages_per_sequence * pc.page_size;
  const int32_t page_mask = pc.page_size - 1, page_shift = __builtin_ctz((unsigned)pc.page_size);
  const uint32_t max_sequences = (uint32_t)pc.max_sequences;
  BatchSummary sum;
  for (int32_t b = 0; b < batch; b++) {
    const int32_t row = rows[b], len = seq_lens[b];
    if ((uint32_t)row >= max_sequences)
      return fail(PKV_ERR_OUT_OF_RANGE, "pkv_decode_plan: rows[%d] = %d is outside the block table's %d rows", b, row,
                  pc.max_sequences);
    if (len < 1 || len > max_len)
      return fail(PKV_ERR_INVALID_ARGUMENT, "pkv_decode_plan: seq_lens[%d] = %d is not in 1..%lld (table width %d x page size %d)",
                  b, len, (long long)max_len, pc.max_pages_per_sequence, pc.page_size);
    sum.total_tokens += len;
    sum.longest = std::max<int64_t>(sum.longest, len);
    const int32_t pages = (int32_t)(((int64_t)len + page_mask) >> page_shift);
    const int32_t from = pool->dirty_from[row];
    if (from >= pages) continue;  // clean (INT32_MAX), or dirty only past its length
    if (from < 0)
      return fail(PKV_ERR_INVALID_ARGUMENT, "pkv_decode_plan: dirty_from[%d] = %d is negative", row, from);
    const int32_t *entries = pool->table_host + (int64_t)row * pc.max_pages_per_sequence;
    for (int32_t c = from; c < pages; c++)
      if (entries[c] < 0 || entries[c] >= pc.num_pages)
        return fail(PKV_ERR_OUT_OF_RANGE, "pkv_decode_plan: block table row %d column %d holds page %d, outside 0..%d",
                    row, c, entries[c], pc.num_pages - 1);
    sum.num_deltas += pages - from;
    sum.dirty_rows++;
  }
  *out = sum;
  return PKV_OK;
}

// Copies the dirty entries into the image and marks them uploaded. Columns past a row's current length
// stay dirty: they are uploaded by the step that first reads them. Stops after the `dirty_rows` that
// check_batch counted, so a step with a few new pages does not walk the whole batch again.
int32_t gather_deltas(pkv_kvpool *pool, int32_t batch, const int32_t *rows, const int32_t *seq_lens, int32_t dirty_rows,
                      pkv::PlanDelta *out) {
  const pkv_kv_config &pc = pool->config;
  const int32_t page_mask = pc.page_size - 1, page_shift = __builtin_ctz((unsigned)pc.page_size);
  int32_t n = 0;
  for (int32_t b = 0; b < batch && dirty_rows > 0; b++) {
    const int32_t pages = (int32_t)(((int64_t)seq_lens[b] + page_mask) >> page_shift);
    int32_t &from = pool->dirty_from[rows[b]];
    if (from >= pages) continue;
    const int32_t *entries = pool->table_host + (int64_t)rows[b] * pc.max_pages_per_sequence;
    for (int32_t c = from; c < pages; c++) out[n++] = pkv::PlanDelta{rows[b], c, entries[c], 0};
    from = pages;
    dirty_rows--;
  }
  return n;
}

// A staging image may be rewritten once the upload that read it is done (usually long done).
pkv_status wait_for_staging(Staging &st) {
  if (st.in_flight && cudaEventQuery(st.copied) != cudaSuccess) {
    cudaGetLastError();  // "not ready" is an answer, not an error: keep it from the next launch's check
    PKV_CUDA_TRY(cudaEventSynchronize(st.copied));
  }
  st.in_flight = false;
  return PKV_OK;
}

// Makes the image in `st` (complete up to its deltas) the engine's current plan over `pool`: one async
// upload and the deltas applied to the pool's device table. The deltas came from `dirty_pool`'s pinned
// table (the pool itself, or the planning engine's pool when the image is a copy: sharded.cpp).
pkv_status install_plan(pkv_decode_engine *e, pkv_kvpool *pool, uint64_t pool_token, Staging &st, int32_t kernel,
                        pkv_kvpool *dirty_pool) {
  const bool cuda = pkv::on_cuda(e->rt);
  pkv::PlanHeader *header = &pkv::plan_header(st.host);
  const int64_t used = 16 * ((int64_t)header->deltas_offset + header->num_deltas);
  e->plan_id = e->plan_id == INT32_MAX ? 1 : e->plan_id + 1;
  e->plan_host = st.host;
  e->pool = pool;
  e->pool_token = 0;  // set below once the plan is complete
  // If the upload fails, the gathered deltas are marked dirty again in the table they came from, so the
  // next plan uploads them.
  struct RestoreDirty {
    pkv_kvpool *pool;
    const pkv::PlanDelta *deltas;
    int32_t n;
    bool armed;
    ~RestoreDirty() {
      for (int32_t i = 0; armed && i < n; i++)
        pool->dirty_from[deltas[i].table_row] = std::min(pool->dirty_from[deltas[i].table_row], deltas[i].column);
    }
  } restore{dirty_pool, pkv::plan_deltas(st.host), header->num_deltas, true};
  e->kernel = kernel;
  e->batch = header->batch;
  e->num_tasks = header->num_tasks;
  e->num_deltas = header->num_deltas;
  e->grid = kernel == PKV_KERNEL_BASELINE ? header->num_tasks : std::min(e->persistent_grid, header->num_tasks);
  e->run_body = e->body;
  if (e->short_body.loader != e->body.loader) {  // only FP8 engines with two bodies read the rows for it
    const pkv::PlanRow *rows = pkv::plan_rows(st.host);
    int32_t longest = 0;
    for (int32_t i = 0; i < header->batch; i++) longest = std::max(longest, rows[i].seq_len);
    if (longest <= kFp8ShortRowTokens) e->run_body = e->short_body;
  }

  if (cuda) {
    cudaStream_t s = e->rt->stream;
    if (e->foreign_runs) PKV_CUDA_TRY(cudaStreamWaitEvent(s, e->foreign_runs_done, 0));
    const int64_t deltas_at = 16 * (int64_t)header->deltas_offset;
    const char *deltas = static_cast<char *>(e->plan_device) + deltas_at;
    if (used <= e->plan_device_capacity) {
      PKV_CUDA_TRY(cudaMemcpyAsync(e->plan_device, st.host, used, cudaMemcpyHostToDevice, s));  // the one copy
    } else {
      PKV_TRY(ensure_deltas_device(e, used - deltas_at));
      PKV_CUDA_TRY(cudaMemcpyAsync(e->plan_device, st.host, deltas_at, cudaMemcpyHostToDevice, s));
      PKV_CUDA_TRY(cudaMemcpyAsync(e->deltas_device, static_cast<char *>(st.host) + deltas_at, used - deltas_at,
                                   cudaMemcpyHostToDevice, s));
      deltas = static_cast<char *>(e->deltas_device);
    }
    PKV_CUDA_TRY(cudaEventRecord(st.copied, s));
    st.in_flight = true;
    e->next_staging ^= 1;
    PKV_TRY(pkv::launch_apply_deltas(deltas, header->num_deltas, pool->table_device, pool->config.max_pages_per_sequence, s));
    e->plan_ready_recorded = false;
  }
  if (!cuda) pkv::cpu_apply_deltas(pkv::plan_deltas(st.host), header->num_deltas, pool->table_device,
                                   pool->config.max_pages_per_sequence);
  e->pool_token = pool_token;
  restore.armed = false;
  return PKV_OK;
}

pkv_status check_run(pkv_decode_engine *e, int32_t plan_id, int32_t layer, const char *func) {
  if (e->plan_id == 0 || plan_id != e->plan_id)
    return fail(PKV_ERR_STALE_PLAN, "%s: plan %d is not the engine's current plan (%d)", func, plan_id, e->plan_id);
  if (e->pool_token == 0)
    return fail(PKV_ERR_BAD_STATE, "%s: plan %d did not complete (its upload failed); make a new plan", func, plan_id);
  if (pkv::lookup<pkv_kvpool>(e->pool_token, pkv::Kind::KvPool) != e->pool)
    return fail(PKV_ERR_BAD_STATE, "%s: plan %d's KV pool was destroyed", func, plan_id);
  if (layer < 0 || layer >= e->pool->config.num_layers)
    return fail(PKV_ERR_OUT_OF_RANGE, "%s: layer %d is outside 0..%d", func, layer, e->pool->config.num_layers - 1);
  return PKV_OK;
}

float sm_scale_of(const pkv_decode_engine *e) {
  return e->cfg.sm_scale > 0.f ? e->cfg.sm_scale : 1.f / std::sqrt((float)e->cfg.head_dim);
}

// What one layer's run reads, for either executor: the CUDA kernels (plan: the device image) or the CPU
// backend (plan: the host image).
pkv::DecodeParams decode_params(const pkv_decode_engine *e, int32_t layer, const void *plan, const void *q, void *out,
                                float *lse) {
  pkv::DecodeParams p;
  p.k = pkv::layer_k(e->pool, layer);
  p.v = pkv::layer_v(e->pool, layer);
  p.table = e->pool->table_device;
  p.table_stride = e->pool->config.max_pages_per_sequence;
  p.plan = plan;
  p.q = q;
  p.out = out;
  p.lse = lse;
  p.partial_o = e->partial_o;
  p.partial_lse = e->partial_lse;
  p.merge_counters = e->merge_counters;
  p.tile_cursors = e->tile_cursors;
  p.slot_counters = e->slot_counters;
  p.splits_out = e->splits_out;
  p.work_counter = e->work_counter;
  p.num_kv_heads = e->cfg.num_kv_heads;
  p.group = e->group;
  p.page_shift = e->page_shift;
  p.scale_log2 = sm_scale_of(e) * 1.4426950408889634f;
  return p;
}

bool is_sharing(const pkv_decode_engine *e) { return e->sh && e->sh->active; }

// What the shared launches read; `lse` is the decode kernels' (the caller's or the engine's own).
pkv::ShParams shared_params(const pkv_decode_engine *e, int32_t layer, const void *q, void *out, float *lse) {
  pkv::ShParams p;
  p.k = pkv::layer_k(e->pool, layer);
  p.v = pkv::layer_v(e->pool, layer);
  p.table = e->pool->table_device;
  p.table_stride = e->pool->config.max_pages_per_sequence;
  p.image = pkv::sh_image(e->rt, *e->sh);
  p.q = q;
  p.out = out;
  p.lse = lse;
  p.partial = e->sh->partial;
  p.num_kv_heads = e->cfg.num_kv_heads;
  p.group = e->group;
  p.page_shift = e->page_shift;
  p.scale_log2 = sm_scale_of(e) * 1.4426950408889634f;
  return p;
}

// A step that shares runs its shared tasks, then the decode kernels over the rows' own tokens, then the
// combine (which needs the rows' own lse: the engine's buffer when the caller wants none).
void cpu_run(pkv_decode_engine *e, int32_t layer, const void *q, void *out, float *lse) {
  const int32_t d = e->cfg.head_dim, dtype = e->cfg.dtype;
  if (!is_sharing(e)) return pkv::cpu_decode_run(decode_params(e, layer, e->plan_host, q, out, lse), d, dtype, sm_scale_of(e));
  float *own_lse = lse ? lse : e->sh->lse;
  const pkv::ShParams sp = shared_params(e, layer, q, out, own_lse);
  pkv::cpu_shared_tasks(sp, d, dtype);
  pkv::cpu_decode_run(decode_params(e, layer, e->plan_host, q, out, own_lse), d, dtype, sm_scale_of(e));
  pkv::cpu_shared_combine(sp, d, dtype);
}

// A run on a stream other than the runtime's waits for the plan's upload, and the next plan's upload
// waits for the run (run_on_stream brackets the launches).
template <class Launch>
pkv_status run_on_stream(pkv_decode_engine *e, cudaStream_t stream, Launch launch) {
  // Inside a capture the ordering is the caller's: the graph replays after the plan it was captured
  // with was uploaded, and no event of ours may join the graph.
  const bool foreign = stream != e->rt->stream && !pkv::is_capturing(e->rt, stream);
  if (foreign && !e->plan_ready_recorded) {
    // Recorded only when a run first needs it: the common single-stream loop saves the call per plan.
    PKV_CUDA_TRY(cudaEventRecord(e->plan_ready, e->rt->stream));
    e->plan_ready_recorded = true;
  }
  if (foreign) PKV_CUDA_TRY(cudaStreamWaitEvent(stream, e->plan_ready, 0));
  PKV_TRY(launch());
  if (foreign) {
    // The next plan's upload overwrites the device image: it waits for this run first (on the GPU).
    PKV_CUDA_TRY(cudaEventRecord(e->foreign_runs_done, stream));
    e->foreign_runs = true;
  }
  return PKV_OK;
}

pkv_status cuda_launch(pkv_decode_engine *e, int32_t layer, const void *q, void *out, float *lse, cudaStream_t stream) {
  const int32_t d = e->cfg.head_dim, dtype = e->cfg.dtype;
  if (!is_sharing(e))
    return pkv::launch_decode(e->kernel, e->run_body, dtype, d, decode_params(e, layer, e->plan_device, q, out, lse), e->grid,
                              stream);
  float *own_lse = lse ? lse : e->sh->lse;
  const pkv::ShParams sp = shared_params(e, layer, q, out, own_lse);
  // The decode kernel needs nothing of the tasks: it starts on the multiprocessors they leave free and
  // completes after them; the combine's blocks are placed while it runs and wait for it.
  PKV_TRY(pkv::launch_shared_tasks(dtype, d, e->shared_kernel, sp, e->shared_grid, stream));
  PKV_TRY(pkv::launch_decode(e->kernel, e->run_body, dtype, d, decode_params(e, layer, e->plan_device, q, out, own_lse),
                             e->grid, stream, e->shared_overlap));
  return pkv::launch_shared_combine(dtype, d, sp, e->combine_grid, stream, e->shared_overlap);
}

pkv_status cuda_run(pkv_decode_engine *e, int32_t layer, const void *q, void *out, float *lse, cudaStream_t stream) {
  return run_on_stream(e, stream, [&] { return cuda_launch(e, layer, q, out, lse, stream); });
}

bool is_multi(const pkv_decode_engine *e) { return e->mq && e->mq->active; }
// q and out rows of the current plan: its query tokens.
int64_t io_rows(const pkv_decode_engine *e) { return is_multi(e) ? e->mq->query_tokens : e->batch; }

// A plan with rows of several query tokens: the decode kernels over their rows (which address their own
// q and out rows), then the multi-query section's tasks and merges.
pkv_status run_multi(pkv_decode_engine *e, int32_t layer, const void *q, void *out, float *lse, cudaStream_t stream) {
  pkv::MqState &m = *e->mq;
  const bool cuda = pkv::on_cuda(e->rt);
  pkv::MqParams p;
  p.k = pkv::layer_k(e->pool, layer);
  p.v = pkv::layer_v(e->pool, layer);
  p.table = e->pool->table_device;
  p.table_stride = e->pool->config.max_pages_per_sequence;
  p.image = pkv::mq_image(e->rt, m);
  p.q = q;
  p.out = out;
  p.lse = lse;
  p.partial = m.partial;
  p.num_kv_heads = e->cfg.num_kv_heads;
  p.group = e->group;
  p.page_shift = e->page_shift;
  p.scale_log2 = sm_scale_of(e) * 1.4426950408889634f;
  p.first_task = 0;
  auto launch = [&]() -> pkv_status {
    if (e->batch > 0) {
      if (cuda) PKV_TRY(cuda_launch(e, layer, q, out, lse, stream));
      else cpu_run(e, layer, q, out, lse);
    }
    if (!pkv::mq_has_tasks(m)) return PKV_OK;
    if (!cuda) {
      pkv::cpu_multiquery_run(p, e->cfg.head_dim, e->cfg.dtype, sm_scale_of(e));
      return PKV_OK;
    }
    // The host image holds the counts of the device image it was copied to.
    const pkv::MqHeader &h = pkv::mq_header(m.host);
    return pkv::launch_multiquery(e->cfg.dtype, e->cfg.head_dim, p, {h.num_tasks, h.num_wide, h.wide_grid, h.num_merges},
                                  stream);
  };
  return cuda ? run_on_stream(e, stream, launch) : launch();
}

int64_t io_bytes(const pkv_decode_engine *e, int64_t batch) {
  return (int64_t)batch * e->cfg.num_qo_heads * e->cfg.head_dim * 2;
}

// Resolves `buf` in place (PKV_CHECK) and checks its runtime, alignment and range.
pkv_status check_device_buffer(pkv_decode_engine *e, pkv_buffer *&buf, uint64_t offset, uint64_t bytes,
                               uint64_t align, const char *func, const char *what) {
  PKV_TRY(pkv::resolve(buf, pkv::Kind::Buffer, func, what));
  if (buf->rt != e->rt) return fail(PKV_ERR_INVALID_ARGUMENT, "%s: %s belongs to another runtime", func, what);
  if (offset % align != 0)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: %s offset %llu is not a multiple of %llu bytes", func, what,
                (unsigned long long)offset, (unsigned long long)align);
  return pkv::check_range(what, offset, bytes, buf->bytes);
}

}  // namespace

// ---- sharded.cpp's hook: one plan, several engines (declared in sharded.h) ---------------------

pkv_status pkv::copy_plan(pkv_decode_engine *src, pkv_decode_engine *dst, pkv_kvpool *pool, pkv_plan_info *info) {
  const char *func = "pkv_decode_plan_copy";
  const uint64_t pool_token = (uint64_t)(uintptr_t)pool;
  if (src->plan_id == 0 || src->pool_token == 0)
    return fail(PKV_ERR_BAD_STATE, "%s: src has no complete plan to copy", func);
  pkv_kvpool *src_pool = pkv::lookup<pkv_kvpool>(src->pool_token, pkv::Kind::KvPool);
  if (src_pool != src->pool) return fail(PKV_ERR_BAD_STATE, "%s: src's plan's KV pool was destroyed", func);
  // src's plan took its deltas off src's pool's dirty marks: if dst does not get them (any failure below,
  // exceptions included), they are marked dirty again, so the next plan sends them to every engine.
  struct RedirtyOnFailure {
    pkv_kvpool *pool;
    const void *image;
    bool armed = true;
    ~RedirtyOnFailure() {
      const pkv::PlanHeader &h = pkv::plan_header(image);
      const pkv::PlanDelta *d = pkv::plan_deltas(const_cast<void *>(image));
      for (int32_t i = 0; armed && i < h.num_deltas; i++)
        pool->dirty_from[d[i].table_row] = std::min(pool->dirty_from[d[i].table_row], d[i].column);
    }
  } redirty{src_pool, src->plan_host};
  PKV_TRY(pkv::resolve(pool, pkv::Kind::KvPool, func, "dst_pool"));
  PKV_TRY(pkv::resolve(dst, pkv::Kind::DecodeEngine, func, "dst"));  // last: dst's device is current
  if (src == dst) return fail(PKV_ERR_INVALID_ARGUMENT, "%s: src and dst are the same engine", func);
  if (src->mq && src->mq->active)
    return fail(PKV_ERR_UNSUPPORTED, "%s: src's plan has rows of several query tokens; only decode plans are copied", func);
  if (is_sharing(src))
    return fail(PKV_ERR_BAD_STATE, "%s: src's plan reads shared prefixes once (a shared-prefix section, which is not "
                                   "copied); create src with shared_prefix OFF to copy its plans", func);
  if (!info) return fail(PKV_ERR_NULL_POINTER, "%s: info is NULL", func);
  // The image is only valid for an engine that would have built the same one: the same heads per
  // shard, page size, wave and tile (same GPU model), planner settings and room for the batch.
  const pkv_decode_config &a = src->cfg, &b = dst->cfg;
  if (a.num_qo_heads != b.num_qo_heads || a.num_kv_heads != b.num_kv_heads || a.head_dim != b.head_dim ||
      a.page_size != b.page_size || a.dtype != b.dtype || a.max_batch != b.max_batch ||
      src->shape.wave != dst->shape.wave || src->shape.tile_tokens != dst->shape.tile_tokens ||
      src->persistent_grid != dst->persistent_grid ||
      memcmp(&src->plan_settings, &dst->plan_settings, sizeof src->plan_settings) != 0)
    return fail(PKV_ERR_INVALID_ARGUMENT,
                "%s: the engines plan differently (heads %d/%d vs %d/%d, wave %d vs %d, tile %d vs %d, or their "
                "settings or max_batch differ): a plan image is valid only for engines of one shape on one GPU model",
                func, a.num_qo_heads, a.num_kv_heads, b.num_qo_heads, b.num_kv_heads, src->shape.wave, dst->shape.wave,
                src->shape.tile_tokens, dst->shape.tile_tokens);
  PKV_TRY(check_pool(dst, pool, func));
  const pkv_kv_config &p = pool->config, &q = src_pool->config;
  if (p.num_pages != q.num_pages || p.max_sequences != q.max_sequences ||
      p.max_pages_per_sequence != q.max_pages_per_sequence || p.num_layers != q.num_layers)
    return fail(PKV_ERR_INVALID_ARGUMENT,
                "%s: the pool's table (%d pages, %d x %d rows, %d layers) differs from src's pool's (%d, %d x %d, %d)",
                func, p.num_pages, p.max_sequences, p.max_pages_per_sequence, p.num_layers, q.num_pages,
                q.max_sequences, q.max_pages_per_sequence, q.num_layers);
  const bool cuda = pkv::on_cuda(dst->rt);
  if (cuda && pkv::is_capturing(dst->rt, dst->rt->stream))
    return fail(PKV_ERR_BAD_STATE, "%s: dst's runtime stream is being captured; plan before the capture begins", func);
  const pkv::PlanHeader &h = pkv::plan_header(src->plan_host);
  const int64_t used = 16 * ((int64_t)h.deltas_offset + h.num_deltas);
  Staging &st = dst->staging[cuda ? dst->next_staging : 0];
  PKV_TRY(wait_for_staging(st));
  PKV_TRY(ensure_staging(dst, st, used));
  memcpy(st.host, src->plan_host, used);
  PKV_TRY(install_plan(dst, pool, pool_token, st, src->kernel, src->pool));
  if (dst->mq) dst->mq->active = false;
  if (dst->sh) dst->sh->active = false;
  redirty.armed = false;
  int64_t total = 0;
  int32_t max_splits = 0;
  const pkv::PlanRow *rows = pkv::plan_rows(st.host);
  for (int32_t r = 0; r < h.batch; r++) total += rows[r].seq_len, max_splits = std::max(max_splits, rows[r].num_splits);
  info->total_tokens = total;
  info->kv_bytes = total * b.num_kv_heads * b.head_dim * 4;
  info->plan_id = dst->plan_id;
  info->kernel = dst->kernel;
  info->batch = dst->batch;
  info->num_tasks = dst->num_tasks;
  info->max_splits = max_splits;
  info->grid = dst->grid;
  info->unique_kv_bytes = info->kv_bytes;
  info->shared_tasks = 0;
  info->shared_rows = 0;
  info->loader = dst->run_body.loader;
  return PKV_OK;
}

namespace {

// A plan's batch size and policy (DEFAULT resolved to the engine's).
pkv_status check_plan_call(const pkv_decode_engine *e, int32_t batch, int32_t *policy, const char *func) {
  if (batch < 1 || batch > e->cfg.max_batch)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: batch %d is not in 1..%d (the engine's max_batch)", func, batch,
                e->cfg.max_batch);
  if (*policy == PKV_POLICY_DEFAULT) *policy = e->cfg.policy;
  if (*policy < PKV_POLICY_BASELINE || *policy > PKV_POLICY_ADAPTIVE)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: policy %d is not DEFAULT (-1), BASELINE (0), PERSISTENT (1) or ADAPTIVE (2)",
                func, *policy);
  return PKV_OK;
}

// A workqueue of no decode rows (a step whose every row has several query tokens).
int32_t empty_workqueue(void *image) {
  pkv::PlanHeader &header = pkv::plan_header(image);
  header = pkv::PlanHeader{0, 0, 0, pkv::plan_tasks_offset(0), pkv::plan_tasks_offset(0), 0, 0, 0};
  return 1;
}

// Plans the step's shared-prefix section into e->sh_plan; true if the step shares. The buffers are
// allocated on the first plan that shares (a failure there shares nothing: the step stays correct).
bool plan_shared_section(pkv_decode_engine *e, const pkv_kvpool *pool, int32_t batch, const int32_t *rows,
                         const int32_t *seq_lens) {
  if (e->shared_grid == 0 || batch < 2) return false;
  const pkv::ShCapacity &c = e->sh_capacity;
  const pkv::ShKernelModel model = pkv::shared_kernel_model(e->shared_kernel);
  const pkv::ShPlanShape shape{e->cfg.num_kv_heads,
                               e->group,
                               e->cfg.page_size,
                               e->cfg.head_dim,
                               pkv::kv_row_bytes(e->cfg.dtype, e->cfg.head_dim),
                               e->shared_grid,
                               e->settings.shared_prefix,
                               c.max_tasks,
                               c.max_members,
                               c.max_slots,
                               model.flops_per_us,
                               model.row_tile,
                               e->shared_overlap};
  pkv::plan_shared(shape, batch, rows, seq_lens, pool->table_host, pool->config.max_pages_per_sequence, e->sh_plan);
  if (e->sh_plan.tasks.empty()) return false;
  if (!e->sh && pkv::create_sh_state(e->rt, c, e->cfg.max_batch, e->cfg.num_qo_heads, e->group, e->cfg.head_dim,
                                     &e->sh) != PKV_OK) {
    pkv::begin_call("pkv_decode_plan");  // the failed allocation is not this plan's error
    return false;
  }
  return true;
}

// The rows of a step that run on the decode kernels: all of them (a decode plan: queries null), or a
// mixed step's rows of q_len 1 and the speculative rows the decode kernels take.
struct DecodeRows {
  int32_t count;
  const int32_t *rows;
  const int32_t *seq_lens;
  pkv::PlanQueries queries;
};

// The plan of a step whose rows `d` run on the decode kernels: every row's lengths and block-table
// entries are checked and its new entries uploaded, the workqueue covers the rows of `d`.
pkv_status plan_step(pkv_decode_engine *e, pkv_kvpool *pool, uint64_t pool_token, int32_t batch, const int32_t *rows,
                     const int32_t *seq_lens, const DecodeRows &d, int32_t policy, pkv_plan_info *info) {
  PKV_TRY(check_pool(e, pool, "pkv_decode_plan"));
  BatchSummary sum;
  PKV_TRY(check_batch(pool, batch, rows, seq_lens, &sum));
  const int64_t num_deltas = sum.num_deltas, total_tokens = sum.total_tokens;
  int64_t kv_bytes = 0;
  PKV_TRY(pkv::checked_mul("the step's K and V bytes (tokens x kv heads x K and V row bytes)", &kv_bytes,
                           {(uint64_t)total_tokens, (uint64_t)e->cfg.num_kv_heads,
                            (uint64_t)pkv::kv_row_bytes(e->cfg.dtype, e->cfg.head_dim)}));
  if (num_deltas > INT32_MAX) return fail(PKV_ERR_UNSUPPORTED, "pkv_decode_plan: %lld table entries in one step", (long long)num_deltas);

  const bool cuda = pkv::on_cuda(e->rt);
  // A captured upload would replay from a staging image that later plans overwrite.
  if (cuda && pkv::is_capturing(e->rt, e->rt->stream))
    return fail(PKV_ERR_BAD_STATE, "pkv_decode_plan: the runtime's stream is being captured; plan before the "
                                   "capture begins and capture only the runs");
  // Shared prefixes: only in plans whose every row is a decode row. The decode kernels then read each
  // row's own tokens (from its first unshared column on).
  const bool sharing = !d.queries.counts && d.count == batch && plan_shared_section(e, pool, batch, rows, seq_lens);
  const int32_t *first_columns = sharing ? e->sh_plan.first_column.data() : nullptr;
  static thread_local std::vector<int32_t> own_lens;
  if (sharing) {
    own_lens.resize(batch);
    for (int32_t b = 0; b < batch; b++) own_lens[b] = seq_lens[b] - first_columns[b] * e->cfg.page_size;
  }
  const int32_t *decode_lens = sharing ? own_lens.data() : d.seq_lens;
  const int32_t decode_batch = d.count;
  // The policy judges the decode kernels' rows alone.
  int64_t decode_total = total_tokens, decode_longest = sum.longest;
  if (decode_batch < batch || sharing) {
    decode_total = decode_longest = 0;
    for (int32_t b = 0; b < decode_batch; b++)
      decode_total += decode_lens[b], decode_longest = std::max<int64_t>(decode_longest, decode_lens[b]);
  }
  const int32_t kernel = policy == PKV_POLICY_ADAPTIVE ? adaptive_kernel(e, std::max(1, decode_batch), decode_total, decode_longest)
                         : policy == PKV_POLICY_PERSISTENT ? PKV_KERNEL_PERSISTENT
                                                           : PKV_KERNEL_BASELINE;
  // On the CPU backend nothing is in flight and one image serves.
  Staging &st = e->staging[cuda ? e->next_staging : 0];
  const int64_t bytes_needed = pkv::plan_image_bytes(batch, pkv::max_plan_tasks(e->shape, batch), num_deltas);
  PKV_TRY(wait_for_staging(st));
  PKV_TRY(ensure_staging(e, st, bytes_needed));

  pkv::PlanHeader *header = &pkv::plan_header(st.host);
  const int32_t max_splits = decode_batch > 0 ? pkv::build_workqueue(e->shape, e->plan_settings, kernel, decode_batch, d.rows,
                                                                      decode_lens, first_columns, d.queries, st.host)
                                              : empty_workqueue(st.host);
  if ((int64_t)header->num_partials * e->group > e->partial_rows)
    return fail(PKV_ERR_INTERNAL, "pkv_decode_plan: the plan's %d partial slots overrun the engine's", header->num_partials);
  header->num_deltas = num_deltas == 0 ? 0 : gather_deltas(pool, batch, rows, seq_lens, sum.dirty_rows, pkv::plan_deltas(st.host));
  PKV_TRY(install_plan(e, pool, pool_token, st, kernel, pool));
  e->run_body.queries = d.queries.counts != nullptr;
  if (e->mq) e->mq->active = false;
  if (e->sh) e->sh->active = false;
  if (sharing) {
    e->pool_token = 0;  // incomplete until the section is uploaded
    PKV_TRY(pkv::upload_sh_plan(e->rt, *e->sh, e->sh_plan));
    e->sh->active = true;
    e->pool_token = pool_token;
  }

  info->total_tokens = total_tokens;
  info->kv_bytes = kv_bytes;
  info->plan_id = e->plan_id;
  info->kernel = kernel;
  info->batch = batch;
  info->num_tasks = header->num_tasks;
  info->max_splits = max_splits;
  info->grid = e->grid + (sharing ? e->shared_grid + e->combine_grid : 0);
  info->unique_kv_bytes = sharing ? e->sh_plan.unique_kv_bytes : kv_bytes;
  info->shared_tasks = sharing ? (int32_t)e->sh_plan.tasks.size() : 0;
  info->shared_rows = sharing ? e->sh_plan.shared_rows : 0;
  info->loader = e->run_body.loader;
  return PKV_OK;
}

}  // namespace

extern "C" {

int32_t pkv_plan_info_size(void) { return (int32_t)sizeof(pkv_plan_info); }

pkv_status pkv_decode_engine_create(pkv_runtime *rt, const pkv_decode_config *config, pkv_decode_engine **out) {
  return pkv_decode_engine_create_with(rt, config, nullptr, nullptr, out);
}

pkv_status pkv_decode_engine_create_with(pkv_runtime *rt, const pkv_decode_config *config_in, pkv_kvpool *pool,
                                         const pkv_engine_settings *settings, pkv_decode_engine **out) {
  PKV_API_BEGIN
  const char *func = __func__;
  PKV_CHECK(rt, Runtime);
  PKV_NOT_NULL(config_in);
  PKV_NOT_NULL(out);
  *out = nullptr;
  pkv_decode_config cfg = *config_in;
  if (pool) PKV_TRY(shape_from_pool(rt, pool, &cfg, func));
  const pkv_decode_config *config = &cfg;
  PKV_TRY(check_config(config));
  PKV_TRY(pkv::check_not_capturing(rt));
  pkv_engine_settings chosen = settings ? *settings : pkv::default_engine_settings();
  PKV_TRY(pkv::check_engine_settings(chosen, func));
  const bool loader_auto = chosen.loader == PKV_LOADER_AUTO;
  PKV_TRY(fp8_loader(chosen, config->dtype, config->head_dim, func));
  pkv::DecodeBody body{};
  PKV_TRY(pkv::resolve_decode_body(chosen, config->head_dim, pkv::on_cuda(rt) ? rt->info.cc_major : 0, &body, func));
  auto *e = new pkv_decode_engine();
  e->rt = rt;
  e->cfg = *config;
  e->group = config->num_qo_heads / config->num_kv_heads;
  e->page_shift = __builtin_ctz((unsigned)config->page_size);
  e->next_staging = 0;
  e->plan_id = 0;
  e->settings = chosen;
  e->body = e->short_body = e->run_body = body;
  e->plan_settings = pkv::plan_settings_of(chosen);

  pkv_status s = PKV_OK;
  int32_t wave = kCpuWave;
  e->persistent_grid = kCpuWave;
  if (pkv::on_cuda(rt)) {
    int32_t base_bps = 0, pers_bps = 0;
    s = pkv::decode_blocks_per_sm(PKV_KERNEL_BASELINE, e->body, config->dtype, config->head_dim, &base_bps);
    if (s == PKV_OK)
      s = pkv::decode_blocks_per_sm(PKV_KERNEL_PERSISTENT, e->body, config->dtype, config->head_dim, &pers_bps);
    if (s == PKV_OK && (base_bps < 1 || pers_bps < 1))
      s = fail(PKV_ERR_UNSUPPORTED, "pkv_decode_engine_create: the decode kernels cannot be resident on this device");
    wave = std::max(1, base_bps) * rt->info.multiprocessors;
    e->persistent_grid = std::max(1, pers_bps) * rt->info.multiprocessors;
    if (s == PKV_OK) s = fp8_short_body(e, loader_auto, &e->short_body);
  }
  // Wide multi-query tiles on Hopper's warpgroup kernel (16-bit pages, head dims up to 128); the CPU
  // backend plans them as an H200 would (132 SMs, one block each), so that its executor runs the same
  // sections. PKV_MULTIQUERY_KERNEL=mma (read here) keeps every tile narrow, for comparisons.
  const char *mq_kernel_env = std::getenv("PKV_MULTIQUERY_KERNEL");
  const bool mq_narrow = mq_kernel_env && std::strcmp(mq_kernel_env, "mma") == 0;
  const bool mq_tiles = mq_narrow || (mq_kernel_env && std::strcmp(mq_kernel_env, "tiles") == 0);
  const bool mq_wide = !mq_narrow && !pkv::is_fp8(config->dtype);
  if (s == PKV_OK && mq_wide && !pkv::on_cuda(rt) && pkv::multiquery_has_wide(9, 0, config->head_dim))
    e->mq_wide_wave = kCpuWave / 3;
  if (s == PKV_OK && mq_wide && pkv::on_cuda(rt) &&
      pkv::multiquery_has_wide(rt->info.cc_major, rt->info.cc_minor, config->head_dim)) {
    int32_t bps = 0;
    s = pkv::multiquery_wide_blocks_per_sm(config->dtype, config->head_dim, &bps);
    e->mq_wide_wave = std::max(0, bps) * rt->info.multiprocessors;
  }
  // PKV_MULTIQUERY_KERNEL=tiles (or mma) keeps rows of several queries off the decode kernels, for comparisons.
  e->decode_queries = !pkv::is_fp8(config->dtype) && e->body.math == PKV_MATH_TENSOR_CORES && !mq_tiles;
  e->shape = pkv::PlanShape{config->num_kv_heads, config->page_size, wave, kMinSplitTokens,
                            pkv::decode_tile_tokens_of(config->head_dim, e->body.math, config->dtype)};
  e->max_tasks = pkv::max_plan_tasks(e->shape, config->max_batch);
  if (s == PKV_OK && chosen.shared_prefix != PKV_SHARED_OFF && !pkv::is_fp8(config->dtype)) {
    int32_t bps = 1;
    const char *kernel_env = std::getenv("PKV_SHARED_KERNEL");
    const bool warpgroup = !(kernel_env && std::strcmp(kernel_env, "mma") == 0);
    e->shared_kernel = pkv::shared_kernel_for(rt->info.cc_major, rt->info.cc_minor, config->head_dim, warpgroup);
    if (pkv::on_cuda(rt)) s = pkv::shared_blocks_per_sm(config->dtype, config->head_dim, e->shared_kernel, &bps);
    // Where the shared kernels lack the shape (dtype, head dim) AUTO shares nothing; ALWAYS, asked for
    // explicitly, is refused with the kernels' reason.
    if (s != PKV_OK && chosen.shared_prefix == PKV_SHARED_AUTO) {
      s = PKV_OK, bps = 0;
      pkv::begin_call(func);
    }
    e->shared_grid = pkv::on_cuda(rt) ? std::max(0, bps) * rt->info.multiprocessors : kCpuWave;
    e->shared_overlap = pkv::on_cuda(rt) && rt->info.cc_major >= 9;
    e->sh_capacity = pkv::sh_capacity(config->max_batch, config->num_kv_heads, std::max(1, e->shared_grid));
    // The combine is latency-bound: a thread per chunk of the largest batch, so that one pass serves it.
    const int64_t chunks = (int64_t)config->max_batch * config->num_qo_heads * (config->head_dim / 8);
    e->combine_grid = (int32_t)std::clamp<int64_t>((chunks + pkv::kShCombineThreads - 1) / pkv::kShCombineThreads, 1,
                                                   16 * std::max(1, rt->info.multiprocessors));
  }

  const int64_t g = e->group, d = config->head_dim;
  const int64_t image = pkv::plan_image_bytes(config->max_batch, e->max_tasks, kDeltaReserve);
  auto alloc = [&](int32_t kind, int64_t bytes, void **p) {
    if (s == PKV_OK) s = pkv::raw_alloc(rt, kind, bytes, p);
  };
  alloc(PKV_MEM_PINNED, image, &e->staging[0].host);
  alloc(PKV_MEM_PINNED, image, &e->staging[1].host);
  e->staging[0].capacity = e->staging[1].capacity = image;
  e->partial_rows = e->max_tasks * (e->decode_queries ? 16 : g);
  alloc(PKV_MEM_DEVICE, e->partial_rows * d * 4, (void **)&e->partial_o);
  alloc(PKV_MEM_DEVICE, e->partial_rows * 4, (void **)&e->partial_lse);
  const int64_t pairs = (int64_t)config->max_batch * config->num_kv_heads;
  const size_t counter_bytes = (size_t)pairs * (8 + 3 * 4);
  alloc(PKV_MEM_DEVICE, (int64_t)counter_bytes, (void **)&e->merge_counters);
  if (s == PKV_OK) {
    e->tile_cursors = reinterpret_cast<int32_t *>(e->merge_counters + pairs);
    e->slot_counters = e->tile_cursors + pairs;
    e->splits_out = e->slot_counters + pairs;
  }
  alloc(PKV_MEM_DEVICE, 16, (void **)&e->work_counter);
  if (pkv::on_cuda(rt)) {
    alloc(PKV_MEM_DEVICE, image, &e->plan_device);
    e->plan_device_capacity = image;
    auto cuda = [&](cudaError_t err, const char *what) {
      if (s == PKV_OK && err != cudaSuccess) s = pkv::fail_cuda(err, what, "pkv_decode_engine_create");
    };
    cuda(cudaEventCreateWithFlags(&e->staging[0].copied, cudaEventDisableTiming), "cudaEventCreate");
    cuda(cudaEventCreateWithFlags(&e->staging[1].copied, cudaEventDisableTiming), "cudaEventCreate");
    cuda(cudaEventCreateWithFlags(&e->plan_ready, cudaEventDisableTiming), "cudaEventCreate");
    cuda(cudaEventCreateWithFlags(&e->foreign_runs_done, cudaEventDisableTiming), "cudaEventCreate");
    if (s == PKV_OK)
      cuda(cudaMemsetAsync(e->merge_counters, 0, counter_bytes, rt->stream), "cudaMemsetAsync");
    if (s == PKV_OK) cuda(cudaMemsetAsync(e->work_counter, 0, 16, rt->stream), "cudaMemsetAsync");
  } else if (s == PKV_OK) {
    memset(e->merge_counters, 0, counter_bytes);
  }
  if (s != PKV_OK) {
    free_engine(e);
    return s;
  }
  *out = pkv::handle_of<pkv_decode_engine>(pkv::adopt(rt, e, pkv::Kind::DecodeEngine, destroy_engine));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_decode_engine_settings(pkv_decode_engine *engine, pkv_engine_settings *out) {
  PKV_API_BEGIN
  PKV_CHECK(engine, DecodeEngine);
  PKV_NOT_NULL(out);
  *out = engine->settings;
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_decode_engine_destroy(pkv_decode_engine *engine) {
  PKV_API_BEGIN
  PKV_CHECK(engine, DecodeEngine);
  PKV_TRY(pkv::check_not_capturing(engine->rt));
  destroy_engine(engine);
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_decode_set_policy_table(pkv_decode_engine *engine, const int8_t *choices, int32_t count) {
  PKV_API_BEGIN
  PKV_CHECK(engine, DecodeEngine);
  const int32_t size = PKV_POLICY_BATCH_BUCKETS * PKV_POLICY_TOKEN_BUCKETS;
  if (count == 0) {
    engine->policy.loaded = false;
    return PKV_OK;
  }
  if (count != size)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: the table has %d cells, not %d (or 0 to clear)", __func__, count, size);
  PKV_NOT_NULL(choices);
  for (int32_t i = 0; i < size; i++)
    if (choices[i] < -1 || choices[i] > PKV_KERNEL_PERSISTENT)
      return fail(PKV_ERR_INVALID_ARGUMENT, "%s: cell %d holds %d, not -1, BASELINE (0) or PERSISTENT (1)", __func__, i,
                  choices[i]);
  memcpy(engine->policy.choices, choices, size);
  engine->policy.loaded = true;
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_decode_plan(pkv_decode_engine *engine, pkv_kvpool *pool, int32_t batch, const int32_t *rows,
                           const int32_t *seq_lens, int32_t policy, pkv_plan_info *info) {
  PKV_API_BEGIN
  // The pool's token as given, before PKV_CHECK resolves it in place: the plan keeps it without a
  // second registry lookup.
  const uint64_t pool_token = (uint64_t)(uintptr_t)pool;
  PKV_CHECK(engine, DecodeEngine);
  PKV_CHECK(pool, KvPool);
  PKV_NOT_NULL(rows);
  PKV_NOT_NULL(seq_lens);
  PKV_NOT_NULL(info);
  pkv_decode_engine *e = engine;
  PKV_TRY(check_plan_call(e, batch, &policy, __func__));
  return plan_step(e, pool, pool_token, batch, rows, seq_lens, DecodeRows{batch, rows, seq_lens, {}}, policy, info);
  PKV_API_END
}

pkv_status pkv_decode_run(pkv_decode_engine *engine, int32_t plan_id, int32_t layer, const void *q, void *out,
                          float *lse) {
  PKV_API_BEGIN
  PKV_CHECK(engine, DecodeEngine);
  PKV_NOT_NULL(q);
  PKV_NOT_NULL(out);
  pkv_decode_engine *e = engine;
  PKV_TRY(check_run(e, plan_id, layer, __func__));
  PKV_TRY(pkv::check_not_capturing(e->rt));  // host arrays: the run waits for its result
  if (is_multi(e)) {
    if (!pkv::on_cuda(e->rt)) return run_multi(e, layer, q, out, lse, nullptr);
    // The plan sized the section's device q, out and lse for its query tokens.
    const int64_t used = io_bytes(e, io_rows(e)), lse_bytes = io_rows(e) * e->cfg.num_qo_heads * 4;
    char *q_dev = static_cast<char *>(e->mq->io), *out_dev = q_dev + used;
    float *lse_dev = reinterpret_cast<float *>(out_dev + used);
    cudaStream_t s = e->rt->stream;
    PKV_CUDA_TRY(cudaMemcpyAsync(q_dev, q, used, cudaMemcpyHostToDevice, s));
    PKV_TRY(run_multi(e, layer, q_dev, out_dev, lse ? lse_dev : nullptr, s));
    PKV_CUDA_TRY(cudaMemcpyAsync(out, out_dev, used, cudaMemcpyDeviceToHost, s));
    if (lse) PKV_CUDA_TRY(cudaMemcpyAsync(lse, lse_dev, lse_bytes, cudaMemcpyDeviceToHost, s));
    PKV_CUDA_TRY(cudaStreamSynchronize(s));
    return PKV_OK;
  }
  if (!pkv::on_cuda(e->rt)) {
    cpu_run(e, layer, q, out, lse);
    return PKV_OK;
  }
  const int64_t io = io_bytes(e, e->cfg.max_batch), used = io_bytes(e, e->batch);
  const int64_t lse_bytes = (int64_t)e->batch * e->cfg.num_qo_heads * 4;
  if (!e->io_device) PKV_TRY(pkv::raw_alloc(e->rt, PKV_MEM_DEVICE, 2 * io + io / e->cfg.head_dim * 2, &e->io_device));
  char *q_dev = static_cast<char *>(e->io_device), *out_dev = q_dev + io;
  float *lse_dev = reinterpret_cast<float *>(out_dev + io);
  cudaStream_t s = e->rt->stream;
  PKV_CUDA_TRY(cudaMemcpyAsync(q_dev, q, used, cudaMemcpyHostToDevice, s));
  PKV_TRY(cuda_run(e, layer, q_dev, out_dev, lse ? lse_dev : nullptr, s));
  PKV_CUDA_TRY(cudaMemcpyAsync(out, out_dev, used, cudaMemcpyDeviceToHost, s));
  if (lse) PKV_CUDA_TRY(cudaMemcpyAsync(lse, lse_dev, lse_bytes, cudaMemcpyDeviceToHost, s));
  PKV_CUDA_TRY(cudaStreamSynchronize(s));
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_decode_run_device(pkv_decode_engine *engine, int32_t plan_id, int32_t layer, pkv_buffer *q,
                                 uint64_t q_offset, pkv_buffer *out, uint64_t out_offset, pkv_buffer *lse,
                                 uint64_t lse_offset, pkv_stream *stream) {
  PKV_API_BEGIN
  PKV_CHECK(engine, DecodeEngine);
  pkv_decode_engine *e = engine;
  PKV_TRY(check_run(e, plan_id, layer, __func__));
  const uint64_t io = io_bytes(e, io_rows(e));
  PKV_TRY(check_device_buffer(e, q, q_offset, io, 16, __func__, "q"));
  PKV_TRY(check_device_buffer(e, out, out_offset, io, 16, __func__, "out"));
  const uint64_t lse_bytes = (uint64_t)io_rows(e) * e->cfg.num_qo_heads * 4;
  if (lse) PKV_TRY(check_device_buffer(e, lse, lse_offset, lse_bytes, 4, __func__, "lse"));
  // The kernels read q while they write out and lse: overlapping ranges would corrupt the result.
  // (Each range lies within its buffer, so the sums cannot wrap.)
  auto overlap = [](pkv_buffer *a, uint64_t at, uint64_t an, pkv_buffer *b, uint64_t bt, uint64_t bn) {
    return a == b && at < bt + bn && bt < at + an;
  };
  if (overlap(q, q_offset, io, out, out_offset, io) ||
      (lse && (overlap(q, q_offset, io, lse, lse_offset, lse_bytes) || overlap(out, out_offset, io, lse, lse_offset, lse_bytes))))
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: the q, out and lse ranges overlap", __func__);
  PKV_TRY(pkv::check_stream(e->rt, stream, __func__));
  const void *qp = static_cast<char *>(q->ptr) + q_offset;
  void *op = static_cast<char *>(out->ptr) + out_offset;
  float *lp = lse ? reinterpret_cast<float *>(static_cast<char *>(lse->ptr) + lse_offset) : nullptr;
  // A multi-query section's launches take their counts from the host image, which the next plan rewrites:
  // only plans whose rows all run on the decode kernels are captured.
  const bool section = e->mq && pkv::mq_has_tasks(*e->mq);
  if (section && pkv::on_cuda(e->rt) && pkv::is_capturing(e->rt, pkv::stream_of(e->rt, stream)))
    return fail(PKV_ERR_BAD_STATE,
                "%s: a plan with rows of more than 16 query rows (q_len x group) cannot be captured into a graph", __func__);
  if (!pkv::on_cuda(e->rt)) {
    if (is_multi(e)) return run_multi(e, layer, qp, op, lp, nullptr);
    cpu_run(e, layer, qp, op, lp);
    return PKV_OK;
  }
  for (const void *used : {(const void *)e, (const void *)e->pool, (const void *)q, (const void *)out, (const void *)lse})
    pkv::note_capture_use(e->rt, pkv::stream_of(e->rt, stream), used);
  if (is_multi(e)) return run_multi(e, layer, qp, op, lp, pkv::stream_of(e->rt, stream));
  return cuda_run(e, layer, qp, op, lp, pkv::stream_of(e->rt, stream));
  PKV_API_END
}

pkv_status pkv_decode_plan_q(pkv_decode_engine *engine, pkv_kvpool *pool, int32_t batch, const int32_t *rows,
                             const int32_t *seq_lens, const int32_t *q_lens, int32_t policy, pkv_plan_info *info) {
  PKV_API_BEGIN
  const uint64_t pool_token = (uint64_t)(uintptr_t)pool;
  PKV_CHECK(engine, DecodeEngine);
  PKV_CHECK(pool, KvPool);
  PKV_NOT_NULL(rows);
  PKV_NOT_NULL(seq_lens);
  PKV_NOT_NULL(info);
  pkv_decode_engine *e = engine;
  PKV_TRY(check_plan_call(e, batch, &policy, __func__));
  int64_t query_tokens = 0;
  int32_t decode_rows = 0;
  for (int32_t b = 0; q_lens && b < batch; b++) {
    if (q_lens[b] < 1 || q_lens[b] > seq_lens[b])
      return fail(PKV_ERR_INVALID_ARGUMENT, "%s: q_lens[%d] = %d is not in 1..seq_lens[%d] = %d", __func__, b, q_lens[b], b,
                  seq_lens[b]);
    query_tokens += q_lens[b];
    decode_rows += q_lens[b] == 1;
  }
  if (query_tokens > INT32_MAX)
    return fail(PKV_ERR_INVALID_ARGUMENT, "%s: %lld query tokens in one step (at most 2^31 - 1)", __func__,
                (long long)query_tokens);
  if (!q_lens || decode_rows == batch)
    return plan_step(e, pool, pool_token, batch, rows, seq_lens, DecodeRows{batch, rows, seq_lens, {}}, policy, info);
  if (pkv::is_fp8(e->cfg.dtype))
    return fail(PKV_ERR_UNSUPPORTED, "%s: the multi-query kernels read 16-bit pages; rows of FP8 pages take q_len 1", __func__);

  // The decode kernels take the rows of q_len 1 and, where their body can (decode_queries), the rows of
  // q_len x group <= 16: one 16-row MMA tile either way, so a draft of 4 tokens at group 4 streams its
  // K/V as a decode row does. The multi-query section takes the others.
  if (!e->mq) e->mq = new pkv::MqState();
  pkv::MqState &m = *e->mq;
  static thread_local std::vector<int32_t> d_rows, d_lens, d_counts, d_firsts;
  d_rows.clear(), d_lens.clear(), d_counts.clear(), d_firsts.clear();
  m.plan.rows.clear();
  for (int32_t b = 0, token = 0; b < batch; token += q_lens[b], b++) {
    if (q_lens[b] == 1 || (e->decode_queries && q_lens[b] * e->group <= 16)) {
      d_rows.push_back(rows[b]), d_lens.push_back(seq_lens[b]), d_counts.push_back(q_lens[b]), d_firsts.push_back(token);
    } else {
      m.plan.rows.push_back(pkv::MqRow{rows[b], seq_lens[b], q_lens[b], token});
    }
  }
  const DecodeRows d{(int32_t)d_rows.size(), d_rows.data(), d_lens.data(), {d_counts.data(), d_firsts.data()}};
  PKV_TRY(plan_step(e, pool, pool_token, batch, rows, seq_lens, d, policy, info));
  e->pool_token = 0;  // incomplete until the section is uploaded
  const int32_t wave = pkv::on_cuda(e->rt) ? 2 * e->rt->info.multiprocessors : kCpuWave;
  pkv::plan_multiquery(pkv::MqPlanShape{e->cfg.num_kv_heads, e->group, wave, kMinMqSplitTokens, e->mq_wide_wave}, m.plan);
  PKV_TRY(pkv::upload_mq_plan(e->rt, m, e->cfg.head_dim, query_tokens, io_bytes(e, 1), (int64_t)e->cfg.num_qo_heads * 4));
  m.active = true;
  e->pool_token = pool_token;
  const int32_t mq_tasks = (int32_t)m.plan.tasks.size();
  int32_t mq_splits = 1;
  for (const pkv::MqMerge &merge : m.plan.merges) mq_splits = std::max(mq_splits, merge.num_splits);
  info->batch = batch;
  if (mq_tasks > 0) info->kernel = PKV_KERNEL_MULTIQUERY;
  info->num_tasks += mq_tasks;
  info->grid += m.plan.wide_grid + (mq_tasks - m.plan.num_wide);
  info->max_splits = std::max(info->max_splits, mq_splits);
  return PKV_OK;
  PKV_API_END
}

pkv_status pkv_decode_plan_query_tokens(pkv_decode_engine *engine, int32_t plan_id, int32_t *out) {
  PKV_API_BEGIN
  PKV_CHECK(engine, DecodeEngine);
  PKV_NOT_NULL(out);
  if (engine->plan_id == 0 || plan_id != engine->plan_id)
    return fail(PKV_ERR_STALE_PLAN, "%s: plan %d is not the engine's current plan (%d)", __func__, plan_id, engine->plan_id);
  *out = (int32_t)io_rows(engine);
  return PKV_OK;
  PKV_API_END
}

}  // extern "C"
