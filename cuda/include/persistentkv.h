/* PersistentKV C ABI: the single source of truth for status codes, enums and entry points.
 *
 * Conventions
 * - Every entry point returns a pkv_status; on failure pkv_last_error() holds this thread's message,
 *   which starts with the entry point's name ("pkv_buffer_write: ...").
 * - Every argument is checked before any is used, and a failed call changes nothing.
 * - Handles are opaque and checked on every call: a freed, unknown or wrong-kind handle is
 *   PKV_ERR_INVALID_HANDLE, never a crash. A handle is not an address but a token that is never
 *   reused (below 2^53, so bindings may carry it as a double); a freed object's handle stays invalid
 *   even when its memory is reused.
 * - Sizes and offsets are checked without wrapping: a size whose arithmetic would exceed 63 bits is an
 *   error, never a short allocation.
 * - While a graph capture is open on a runtime (pkv_capture_begin), its calls that would wait for the
 *   GPU, allocate or free are PKV_ERR_BAD_STATE, so the capture survives them.
 * - Host arrays passed in are read before the call returns; native code keeps no pointer to them.
 * - "stream" arguments may be NULL: the runtime's own stream is used.
 * - Layouts: K and V pages are HND, [page][kv_head][slot][head_dim]; q and out are [batch][qo_head][head_dim];
 *   lse is float [batch][qo_head], natural log of the softmax denominator (scores include sm_scale).
 * - Constants are #defines (not enums) so that tools and tests can read them from this file.
 */
#ifndef PERSISTENTKV_H
#define PERSISTENTKV_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PKV_ABI_VERSION 1

/* ---- status codes ---------------------------------------------------------------------------- */
typedef int32_t pkv_status;
#define PKV_OK 0
#define PKV_ERR_INVALID_ARGUMENT 1 /* a value outside its allowed set or range */
#define PKV_ERR_NULL_POINTER 2
#define PKV_ERR_INVALID_HANDLE 3   /* unknown, already freed, or a handle of another kind */
#define PKV_ERR_UNSUPPORTED 4      /* a valid request this backend or shape does not implement */
#define PKV_ERR_OUT_OF_MEMORY 5    /* a device or host allocation failed */
#define PKV_ERR_NO_DEVICE 6
#define PKV_ERR_CUDA 7             /* a CUDA runtime call failed */
#define PKV_ERR_OUT_OF_RANGE 8     /* an index or byte range beyond its buffer, pool or table */
#define PKV_ERR_VERSION_MISMATCH 9
#define PKV_ERR_STALE_PLAN 10      /* a plan run after a newer plan of the same engine replaced it */
#define PKV_ERR_OUT_OF_PAGES 11    /* no free page and none evictable (raised by the cache layer) */
#define PKV_ERR_SWAP_FULL 12       /* swap space exhausted (raised by the cache layer) */
#define PKV_ERR_BAD_STATE 13       /* an object used in a state that forbids it (released, swapped out) */
#define PKV_ERR_INTERNAL 14

/* ---- enums ----------------------------------------------------------------------------------- */
#define PKV_BACKEND_CPU 0
#define PKV_BACKEND_CUDA 1

#define PKV_MEM_DEVICE 0 /* GPU memory (host memory on the CPU backend) */
#define PKV_MEM_PINNED 1 /* page-locked host memory, mapped for zero-copy views */

#define PKV_DTYPE_F16 0
#define PKV_DTYPE_BF16 1
/* FP8 KV storage (see "FP8 KV storage" below): K and V pages hold e4m3 codes and a scale per (token, KV
 * head); the code also names the 16-bit type of the values that writes take and reads return, and of q
 * and out of engines and references of that dtype. */
#define PKV_DTYPE_FP8_E4M3 2      /* e4m3 pages, f16 values */
#define PKV_DTYPE_FP8_E4M3_BF16 3 /* e4m3 pages, bf16 values */

#define PKV_POLICY_DEFAULT (-1) /* the engine's configured policy */
#define PKV_POLICY_BASELINE 0   /* one block per task */
#define PKV_POLICY_PERSISTENT 1 /* fixed grid over a compact workqueue */
#define PKV_POLICY_ADAPTIVE 2   /* chosen per step from the batch's shape */

#define PKV_KERNEL_BASELINE 0
#define PKV_KERNEL_PERSISTENT 1

/* ---- library ----------------------------------------------------------------------------------- */
int32_t pkv_abi_version(void);
const char *pkv_version(void);
const char *pkv_last_error(void);              /* "" when the thread's last call succeeded */
const char *pkv_status_name(pkv_status status); /* "PKV_ERR_..." or "PKV_UNKNOWN_STATUS" */
int32_t pkv_cuda_device_count(void);           /* 0 without a driver or device; never fails */

/* ---- runtime ----------------------------------------------------------------------------------- */
typedef struct pkv_runtime pkv_runtime;
typedef struct pkv_stream pkv_stream;

pkv_status pkv_runtime_create(int32_t backend, int32_t device, pkv_runtime **out);
pkv_status pkv_runtime_destroy(pkv_runtime *rt); /* frees everything still allocated from it */
pkv_status pkv_runtime_synchronize(pkv_runtime *rt);

typedef struct pkv_device_info {
  char name[256];
  int64_t total_memory;
  int64_t l2_bytes;
  int32_t backend;
  int32_t device;
  int32_t multiprocessors;
  int32_t cc_major;
  int32_t cc_minor;
  int32_t max_shared_per_block; /* opt-in limit */
  int32_t max_shared_per_sm;
  int32_t max_threads_per_sm;
} pkv_device_info;
int32_t pkv_device_info_size(void); /* sizeof(pkv_device_info), checked by the bindings */
pkv_status pkv_device_info_get(pkv_runtime *rt, pkv_device_info *out);

/* ---- buffers, streams, events ------------------------------------------------------------------ */
typedef struct pkv_buffer pkv_buffer;

pkv_status pkv_buffer_alloc(pkv_runtime *rt, int32_t kind, uint64_t bytes, pkv_buffer **out);
pkv_status pkv_buffer_free(pkv_buffer *buf);
pkv_status pkv_buffer_address(pkv_buffer *buf, uint64_t *out); /* device or host address */
pkv_status pkv_buffer_size(pkv_buffer *buf, uint64_t *out);
pkv_status pkv_buffer_kind(pkv_buffer *buf, int32_t *out);
/* Host memory in or out; complete on return (read waits for the runtime's stream first). */
pkv_status pkv_buffer_write(pkv_buffer *dst, uint64_t offset, const void *src, uint64_t bytes);
pkv_status pkv_buffer_read(pkv_buffer *src, uint64_t offset, void *dst, uint64_t bytes);
/* Asynchronous on the stream. Overlapping ranges of one buffer are PKV_ERR_INVALID_ARGUMENT. */
pkv_status pkv_buffer_copy(pkv_buffer *dst, uint64_t dst_offset, pkv_buffer *src, uint64_t src_offset,
                           uint64_t bytes, pkv_stream *stream);
pkv_status pkv_buffer_fill(pkv_buffer *dst, uint64_t offset, uint32_t byte_value, uint64_t bytes,
                           pkv_stream *stream);

pkv_status pkv_stream_create(pkv_runtime *rt, pkv_stream **out);
pkv_status pkv_stream_destroy(pkv_stream *stream);
pkv_status pkv_stream_synchronize(pkv_stream *stream);

typedef struct pkv_event pkv_event;
pkv_status pkv_event_create(pkv_runtime *rt, pkv_event **out);
pkv_status pkv_event_destroy(pkv_event *event);
pkv_status pkv_event_record(pkv_event *event, pkv_stream *stream);
pkv_status pkv_event_synchronize(pkv_event *event);
/* Never waits: *done = 1 once the work queued before the event's last record has completed (also for an
 * event never recorded, and always on the CPU backend), 0 while it is still pending. A failure of that work
 * is the call's status. For awaiting the GPU without blocking the caller's thread (poll it). */
pkv_status pkv_event_query(pkv_event *event, int32_t *done);
pkv_status pkv_event_elapsed_ms(pkv_event *start, pkv_event *end, float *ms);

/* ---- interop: memory, streams and KV pools that the caller owns -------------------------------
 * A wrapped object borrows what the caller made (a framework's tensor, its CUDA stream): freeing or
 * destroying the wrapper forgets it and frees nothing, and the caller keeps the memory or stream alive
 * while work queued on it may run. Addresses are 16-byte aligned (every kernel reads 16-byte vectors) and
 * a range may not wrap the address space. On CUDA, device memory must belong to the runtime's device
 * and pinned memory must be page-locked (both checked with cudaPointerGetAttributes at the range's first
 * and last byte); on the CPU backend both kinds are host memory and any host address serves. */
struct pkv_kv_config; /* defined with the KV pool below */
struct pkv_kvpool;
pkv_status pkv_buffer_wrap(pkv_runtime *rt, int32_t kind, uint64_t address, uint64_t bytes, pkv_buffer **out);
pkv_status pkv_buffer_is_wrapped(pkv_buffer *buf, int32_t *out); /* 1: borrowed, 0: ours */
/* cuda_stream: a cudaStream_t of the runtime's device, as an integer (0: the legacy default stream).
 * On the CPU backend work completes at once and the value is only kept. */
pkv_status pkv_stream_wrap(pkv_runtime *rt, uint64_t cuda_stream, pkv_stream **out);
pkv_status pkv_stream_native(pkv_stream *stream, uint64_t *out); /* the cudaStream_t (0 on the CPU backend) */

/* Free and total memory of the runtime's device: cudaMemGetInfo on CUDA; available and physical host
 * memory on the CPU backend. */
pkv_status pkv_runtime_memory_info(pkv_runtime *rt, uint64_t *free_bytes, uint64_t *total_bytes);

/* Where one layer of a pool keeps its pages, for a model that writes or reads them in place. HND: the
 * element (page p, kv head h, slot s, dim i) of K is at k + p * page_bytes + h * head_bytes +
 * s * token_bytes + i * elem_bytes; V likewise. A token slot is page * page_size + offset. */
typedef struct pkv_kvpool_layout {
  int64_t k; /* addresses, below 2^63 in every x64 and GPU address space */
  int64_t v;
  int64_t page_bytes;  /* one page of one layer, K or V: num_kv_heads * head_bytes, and for FP8 pools the
                        * page's float scales [kv head][slot] after its codes, padded to 16 bytes */
  int64_t head_bytes;  /* one (page, kv head) slice: page_size * token_bytes */
  int64_t token_bytes; /* one (slot, kv head) row: head_dim * elem_bytes */
  int32_t num_pages;
  int32_t page_size;
  int32_t num_kv_heads;
  int32_t head_dim;
  int32_t elem_bytes;
  int32_t dtype;
} pkv_kvpool_layout;
int32_t pkv_kvpool_layout_size(void);
pkv_status pkv_kvpool_layout_get(struct pkv_kvpool *pool, int32_t layer, pkv_kvpool_layout *out);
/* Bytes one page id holds across the pool: all layers, K and V (config's shape and num_layers). */
pkv_status pkv_kv_page_bytes(const struct pkv_kv_config *config, uint64_t *out);

/* A pool over K and V pages the caller owns: k_layers[l] and v_layers[l] each address num_pages HND
 * pages of layer l (num_pages * page_bytes, device memory of the runtime). Ours are only the block
 * table the plans need (max_sequences x max_pages_per_sequence) and its device copy. swap_pages must
 * be 0, and page copies (pkv_kvpool_copy_pages) are refused: moving the caller's pages is the caller's
 * job. Token writes and reads, plans and runs work as on any pool. */
pkv_status pkv_kvpool_wrap(pkv_runtime *rt, const struct pkv_kv_config *config, const uint64_t *k_layers,
                           const uint64_t *v_layers, struct pkv_kvpool **out);

/* ---- CUDA graphs: capture a whole step once, replay it with one launch --------------------------
 * Between begin and end, work queued on the stream (copies, plans' uploads, decode runs) is recorded,
 * not executed; nothing in between may wait for the GPU. CUDA backend only (PKV_ERR_UNSUPPORTED on CPU).
 * A graph remembers the buffers, pools and engines its work uses: once one of them is freed or
 * destroyed, pkv_graph_launch is PKV_ERR_BAD_STATE. */
typedef struct pkv_graph pkv_graph;
pkv_status pkv_capture_begin(pkv_runtime *rt, pkv_stream *stream);
pkv_status pkv_capture_end(pkv_runtime *rt, pkv_stream *stream, pkv_graph **out);
pkv_status pkv_graph_launch(pkv_graph *graph, pkv_stream *stream);
pkv_status pkv_graph_destroy(pkv_graph *graph);

/* ---- probes (benchmarks) ----------------------------------------------------------------------- */
/* Streaming read with 16-byte loads over `bytes`; median of `iterations` timed passes, in GB/s. */
pkv_status pkv_probe_read_bandwidth(pkv_runtime *rt, uint64_t bytes, int32_t iterations, double *gbps);
/* Reads a buffer larger than L2 so the next launch on the stream starts with a cold cache. */
pkv_status pkv_flush_l2(pkv_runtime *rt, pkv_stream *stream);

/* ---- reference decode attention (host arrays, CPU) --------------------------------------------- */
typedef struct pkv_attention_shape {
  int32_t num_qo_heads;
  int32_t num_kv_heads; /* num_qo_heads must be a multiple */
  int32_t head_dim;     /* 64, 128 or 256 */
  int32_t page_size;    /* power of two, 1..256 */
  int32_t dtype;        /* PKV_DTYPE_* of K, V, q and out (FP8: pages of the FP8 layout, 16-bit q and out) */
  float sm_scale;       /* 0: 1/sqrt(head_dim) */
} pkv_attention_shape;

/* Sequence b owns pages page_indices[page_indptr[b] .. page_indptr[b+1]) and seq_lens[b] tokens
 * (its last page may be partial). k_pages, v_pages: num_pages HND pages. lse may be NULL.
 * fp32 math with fp64 sums: the reference every kernel is tested against. */
pkv_status pkv_reference_decode(const pkv_attention_shape *shape, int32_t batch, const int32_t *page_indptr,
                                const int32_t *page_indices, const int32_t *seq_lens, const void *k_pages,
                                const void *v_pages, int32_t num_pages, const void *q, void *out, float *lse);

/* ---- paged KV pool ----------------------------------------------------------------------------- */
typedef struct pkv_kv_config {
  int32_t num_layers;
  int32_t num_pages; /* page ids are shared by all layers */
  int32_t page_size;
  int32_t num_kv_heads;
  int32_t head_dim;
  int32_t dtype;
  int32_t max_sequences;          /* rows of the block table */
  int32_t max_pages_per_sequence; /* its width */
  int32_t swap_pages;             /* pinned host swap space, in pages (all layers, K and V) */
  int32_t reserved;               /* must be 0 */
} pkv_kv_config;
typedef struct pkv_kvpool pkv_kvpool;

pkv_status pkv_kvpool_create(pkv_runtime *rt, const pkv_kv_config *config, pkv_kvpool **out);
pkv_status pkv_kvpool_destroy(pkv_kvpool *pool);
/* Pinned host arrays the cache layer writes through views:
 *   block_table  int32 [max_sequences][max_pages_per_sequence]: page ids of each row;
 *   dirty_from   int32 [max_sequences]: first column changed since the row's last upload
 *                (INT32_MAX when clean). The plan uploads only those columns. */
pkv_status pkv_kvpool_table_addresses(pkv_kvpool *pool, uint64_t *block_table, uint64_t *dirty_from);
/* Slots are page * page_size + offset. k and v are host arrays [n][num_kv_heads][head_dim]. */
pkv_status pkv_kvpool_write(pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, const void *k,
                            const void *v);
pkv_status pkv_kvpool_write_device(pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots,
                                   pkv_buffer *k, uint64_t k_offset, pkv_buffer *v, uint64_t v_offset);
pkv_status pkv_kvpool_read(pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, void *k, void *v);
/* Copies whole pages (every layer, K and V): copy-on-write of shared partial pages. */
pkv_status pkv_kvpool_copy_pages(pkv_kvpool *pool, int32_t n, const int32_t *src_pages, const int32_t *dst_pages);
/* Whole pages to and from swap slots of the pool's pinned swap space. A page or slot named twice in one
 * call (two pages into one slot, one slot into two pages) is PKV_ERR_INVALID_ARGUMENT. */
pkv_status pkv_kvpool_swap_out(pkv_kvpool *pool, int32_t n, const int32_t *pages, const int32_t *swap_slots);
pkv_status pkv_kvpool_swap_in(pkv_kvpool *pool, int32_t n, const int32_t *swap_slots, const int32_t *pages);
pkv_status pkv_kvpool_layer_addresses(pkv_kvpool *pool, int32_t layer, uint64_t *k, uint64_t *v);

/* ---- FP8 KV storage ----------------------------------------------------------------------------
 * A pool of dtype PKV_DTYPE_FP8_E4M3 (or _BF16) stores each (token, KV head) row of K (and of V) as
 * head_dim e4m3 codes plus one float scale: scale = amax / 448 (amax: the row's largest |value|; 0 for a
 * zero row), codes = e4m3(value * (448 / amax)), converted round-to-nearest-even with saturation to
 * +-448 (NaN stays NaN, 0x7F), as the GPU's cvt.rn.satfinite does; both backends store the same bits.
 * A row reads back as code * scale. No calibration: each row's scale is fixed when it is written.
 * Page layout (one layer, K or V; a page is page_bytes long, a multiple of 16):
 *   [kv_head][slot][head_dim] uint8 codes, then [kv_head][slot] float scales, then zero padding to 16 bytes.
 * pkv_kvpool_write/_write_device take, and pkv_kvpool_read returns, the dtype's 16-bit values; copies
 * and swaps move whole pages, scales included, byte for byte. pkv_reference_decode with an FP8 dtype
 * reads pages of this layout. Other pools: pkv_kvpool_read_raw is PKV_ERR_INVALID_ARGUMENT. */
/* Bytes of one page of one layer (K or V) for a pool of this shape; 0 for an unsupported shape. */
int64_t pkv_kv_layer_page_bytes(int32_t dtype, int32_t num_kv_heads, int32_t page_size, int32_t head_dim);
/* The stored form of n tokens of an FP8 pool: codes [n][num_kv_heads][head_dim] and scales
 * [n][num_kv_heads] of K and of V. */
pkv_status pkv_kvpool_read_raw(pkv_kvpool *pool, int32_t layer, int32_t n, const int32_t *slots, uint8_t *k_codes,
                               uint8_t *v_codes, float *k_scales, float *v_scales);
/* Host conversions between float and e4m3 codes, the same functions the CPU backend stores with. */
pkv_status pkv_fp8_e4m3_encode(int64_t n, const float *in, uint8_t *out);
pkv_status pkv_fp8_e4m3_decode(int64_t n, const uint8_t *in, float *out);

/* ---- decode engine: plan once per step, run once per layer ------------------------------------- */
typedef struct pkv_decode_config {
  int32_t num_qo_heads;
  int32_t num_kv_heads;
  int32_t head_dim;
  int32_t page_size;
  int32_t dtype;
  int32_t policy;    /* PKV_POLICY_BASELINE, _PERSISTENT or _ADAPTIVE */
  int32_t max_batch; /* rows a plan may hold */
  float sm_scale;    /* 0: 1/sqrt(head_dim) */
} pkv_decode_config;
typedef struct pkv_decode_engine pkv_decode_engine;

typedef struct pkv_plan_info {
  int64_t total_tokens;
  int64_t kv_bytes;  /* K and V bytes one layer reads (FP8: codes and scales) */
  int32_t plan_id;   /* pass to run; a newer plan of the engine makes it stale */
  int32_t kernel;    /* PKV_KERNEL_* chosen */
  int32_t batch;
  int32_t num_tasks; /* non-empty (row, kv head, split) tasks */
  int32_t max_splits;
  int32_t grid;      /* blocks launched per layer */
  int64_t unique_kv_bytes; /* bytes of the distinct K/V pages one layer reads (kv_bytes less what shared tasks read once) */
  int32_t shared_tasks;    /* shared-prefix tasks (0: the step shares nothing) */
  int32_t shared_rows;     /* rows that read part of their context through shared tasks */
  int32_t loader;          /* PKV_LOADER_* the step's decode kernels load K/V with (AUTO can differ by step) */
} pkv_plan_info;
int32_t pkv_plan_info_size(void);

pkv_status pkv_decode_engine_create(pkv_runtime *rt, const pkv_decode_config *config, pkv_decode_engine **out);
pkv_status pkv_decode_engine_destroy(pkv_decode_engine *engine);

/* Engine settings: how the kernels compute and how the persistent planner cuts few-row steps. The
 * defaults (pkv_engine_settings_defaults) are what every engine should run; the other values exist for
 * comparisons, and to force a strategy onto small steps so that tests and sanitizers exercise it. */
#define PKV_MATH_AUTO 0         /* tensor cores where head dim <= 128, CUDA cores otherwise */
#define PKV_MATH_CUDA_CORES 1   /* warp-shuffle dot products, every head dim */
#define PKV_MATH_TENSOR_CORES 2 /* mma.m16n8k16 over the group's query heads; head dim <= 128 */
#define PKV_LOADER_AUTO 0       /* bulk copies with tensor cores on sm_90+ (FP8: cp.async for steps of short rows), cp.async otherwise */
#define PKV_LOADER_CP_ASYNC 1   /* 16-byte cp.async, every GPU */
#define PKV_LOADER_BULK 2       /* Hopper bulk copies completing on mbarriers; sm_90+, tensor cores only */
#define PKV_SHARED_AUTO 0       /* shared-prefix tasks where the planner's cost model says they pay */
#define PKV_SHARED_OFF 1        /* every row reads its own pages (for comparisons) */
#define PKV_SHARED_ALWAYS 2     /* every shared run of two rows or more, however short (tests, sanitizers) */
typedef struct pkv_engine_settings {
  int32_t size;            /* sizeof(pkv_engine_settings), set by pkv_engine_settings_defaults */
  int32_t math;            /* PKV_MATH_* */
  int32_t loader;          /* PKV_LOADER_* */
  int32_t tail_percent;    /* dynamic tail: share of a large few-row step pooled as small tasks, 0..90; 0: off (default 10) */
  int32_t tail_min_splits; /* the tail applies at this many minimum splits (128 tokens) per block or more; 0: every few-row step (default 32) */
  int32_t tail_end_tiles;  /* the tail's pieces shrink to this many pipeline tiles; 0: even pieces (default 2) */
  int32_t claim_min_tiles; /* claiming on few-row steps of at least this many tiles per block; 0: off (default 8) */
  int32_t shared_prefix;   /* PKV_SHARED_*: page runs several rows hold read once per step (default AUTO) */
} pkv_engine_settings;
pkv_status pkv_engine_settings_defaults(pkv_engine_settings *out);
/* As pkv_decode_engine_create, with settings (NULL: the defaults) and optionally the KV pool the engine
 * will read (NULL: none): then the engine's num_kv_heads, head_dim, page_size and dtype are the pool's,
 * and config's are ignored (only num_qo_heads, policy, max_batch and sm_scale are read). */
pkv_status pkv_decode_engine_create_with(pkv_runtime *rt, const pkv_decode_config *config, pkv_kvpool *pool,
                                         const pkv_engine_settings *settings, pkv_decode_engine **out);
/* The settings an engine runs with, AUTO resolved to the math and loader chosen. */
pkv_status pkv_decode_engine_settings(pkv_decode_engine *engine, pkv_engine_settings *out);
/* The adaptive policy's table, measured on this GPU by calibration: a kernel per (batch, total tokens)
 * cell. Batch bucket b = floor(log2 batch), at most PKV_POLICY_BATCH_BUCKETS - 1; token bucket
 * t = floor(log2 total tokens) - PKV_POLICY_MIN_LOG2_TOKENS, clamped to 0..PKV_POLICY_TOKEN_BUCKETS - 1.
 * choices[b * PKV_POLICY_TOKEN_BUCKETS + t] is a PKV_KERNEL_*, or -1 where the built-in rule decides.
 * count must be the table's size, or 0 to clear it. */
#define PKV_POLICY_BATCH_BUCKETS 11
#define PKV_POLICY_TOKEN_BUCKETS 14
#define PKV_POLICY_MIN_LOG2_TOKENS 9
pkv_status pkv_decode_set_policy_table(pkv_decode_engine *engine, const int8_t *choices, int32_t count);
/* rows: block-table rows of the batch's sequences; seq_lens: their context lengths. Never waits for the GPU.
 * The plan checks the dirty entries of its rows and copies them to the pool's own table (on both
 * backends); its runs read that copy, so later writes to the pinned table change no run of this plan.
 * A plan whose pool was destroyed cannot run (PKV_ERR_BAD_STATE). */
pkv_status pkv_decode_plan(pkv_decode_engine *engine, pkv_kvpool *pool, int32_t batch, const int32_t *rows,
                           const int32_t *seq_lens, int32_t policy, pkv_plan_info *info);
/* A plan from a page table the caller owns, over a pool made by pkv_kvpool_wrap (others are
 * PKV_ERR_BAD_STATE: their table belongs to the cache layer). FlashInfer's layout: request b owns pages
 * indices[indptr[b] .. indptr[b+1]) and its last page holds last_page_len[b] tokens (1..page_size), so its
 * context is (pages - 1) * page_size + last_page_len[b]. Every page id, length and count is checked before
 * anything changes; the plan then copies the pages into block-table rows 0..batch-1 (only entries that
 * changed since the last plan are uploaded) and plans as pkv_decode_plan does. One engine plans a pool this
 * way: another engine's paged plan over it is PKV_ERR_BAD_STATE while the first engine lives. */
pkv_status pkv_decode_plan_paged(pkv_decode_engine *engine, pkv_kvpool *pool, int32_t batch, const int32_t *indptr,
                                 const int32_t *indices, const int32_t *last_page_len, int32_t policy,
                                 pkv_plan_info *info);
/* The same from a block table the caller owns: row b (at block_table + b * stride) lists request b's
 * pages, and seq_lens[b] its context length (1..stride * page_size). */
pkv_status pkv_decode_plan_block_table(pkv_decode_engine *engine, pkv_kvpool *pool, int32_t batch,
                                       const int32_t *block_table, int32_t stride, const int32_t *seq_lens,
                                       int32_t policy, pkv_plan_info *info);
/* Host arrays q [batch][Hq][d] in, out [batch][Hq][d] out, lse optional; complete on return. */
pkv_status pkv_decode_run(pkv_decode_engine *engine, int32_t plan_id, int32_t layer, const void *q, void *out,
                          float *lse);
/* Device buffers; asynchronous on the stream. lse may be NULL. q, out and lse may not overlap. */
pkv_status pkv_decode_run_device(pkv_decode_engine *engine, int32_t plan_id, int32_t layer, pkv_buffer *q,
                                 uint64_t q_offset, pkv_buffer *out, uint64_t out_offset, pkv_buffer *lse,
                                 uint64_t lse_offset, pkv_stream *stream);

/* ---- synthetic model (tests and benchmarks) ---------------------------------------------------------
 * A stand-in for a model that runs on the GPU: deterministic q, K and V without weights, bit for bit those
 * of lib/scheduler/synthetic.ts (SyntheticModel). Every value is read from a table of 65536 16-bit values
 * (the caller uploads SyntheticModel's table, in the pool's dtype, to a device buffer of at least
 * PKV_SYNTHETIC_TABLE_BYTES) at an offset hashed from (key, position, layer, which):
 *   q of a row:        mix(request_id, position, layer, 2)            -> [num_qo_heads][head_dim]
 *   K (0) and V (1):   mix(token, position, layer, which) if token >= 0,
 *                      else mix(0x40000000 + request_id, position, layer, which)  -> [num_kv_heads][head_dim]
 *   sampled token:     mix(request_id, position, 3) % vocab
 * where mix is SyntheticModel's 32-bit mix and a run of n values starts at (hash & 0xffff), wrapping.
 * Each entry point reads rows of pkv_synthetic_row from a device buffer (host memory on the CPU backend)
 * and queues its work on the stream; the rows are read by the GPU when the work runs, so these calls can
 * be captured into a graph and replayed with new rows. A row whose slot lies outside the pool is skipped
 * (its K and V are not written): the GPU cannot report it, so callers pass slots that KV-cache appends
 * returned. The pool's dtype must be 16-bit (f16 or bf16). */
#define PKV_SYNTHETIC_TABLE_ENTRIES 65536
#define PKV_SYNTHETIC_TABLE_BYTES 131072 /* 2 bytes per entry */
typedef struct pkv_synthetic_row {
  int32_t request_id;
  int32_t position; /* the token's position in its sequence */
  int32_t token;    /* its id, or -1 where unknown (a prompt given by length) */
  int32_t slot;     /* where its K and V go: page * page_size + offset */
} pkv_synthetic_row;
/* One decode layer of `batch` rows: q [batch][num_qo_heads][head_dim] into q (at q_offset, 16-byte aligned),
 * and each row's K and V of `layer` into the pool at its slot. num_qo_heads: a multiple of the pool's KV
 * heads. rows: batch pkv_synthetic_row at rows_offset (16-byte aligned). */
pkv_status pkv_synthetic_forward(pkv_kvpool *pool, pkv_buffer *table, int32_t layer, int32_t num_qo_heads, int32_t batch,
                                 pkv_buffer *rows, uint64_t rows_offset, pkv_buffer *q, uint64_t q_offset,
                                 pkv_stream *stream);
/* Prefill: K and V of n context tokens (one row each) in every layer of the pool. */
pkv_status pkv_synthetic_prefill(pkv_kvpool *pool, pkv_buffer *table, int32_t n, pkv_buffer *rows,
                                 uint64_t rows_offset, pkv_stream *stream);
/* The token each of `batch` rows generates, int32 [batch] into tokens (at tokens_offset, 4-byte aligned).
 * vocab: 1..2^31-1. The synthetic token depends on (request id, position) only, never on attention output,
 * exactly as SyntheticModel.sample. */
pkv_status pkv_synthetic_sample(int32_t vocab, int32_t batch, pkv_buffer *rows, uint64_t rows_offset,
                                pkv_buffer *tokens, uint64_t tokens_offset, pkv_stream *stream);

/* ---- several devices of one host: caches and engines sharded by KV heads ---------------------
 * Each device holds its KV heads' K and V for every token, so attention needs no communication: what
 * crosses devices is one plan image per step (built once on the host) and, on request, the outputs. */
/* Lets the two runtimes' devices read each other's memory (peer access, no NVLink multicast). Both
 * runtimes of one backend; a no-op on the CPU backend or for one device; PKV_ERR_UNSUPPORTED where the
 * devices have no peer path. */
pkv_status pkv_runtime_enable_peer_access(pkv_runtime *a, pkv_runtime *b);
/* Copies `rows` rows of `row_bytes` from src (rows src_pitch bytes apart) to dst (dst_pitch apart);
 * src and dst may belong to different runtimes (devices) of one backend. Asynchronous on `stream` (of
 * dst's runtime; NULL: its own), ordered after the work queued on src's runtime's own stream. Not
 * during a graph capture on either runtime (PKV_ERR_BAD_STATE). */
pkv_status pkv_buffer_copy_rows(pkv_buffer *dst, uint64_t dst_offset, uint64_t dst_pitch, pkv_buffer *src,
                                uint64_t src_offset, uint64_t src_pitch, uint64_t row_bytes, uint64_t rows,
                                pkv_stream *stream);
/* Makes dst's current plan a copy of src's current plan, without planning again: the same workqueue
 * and block-table deltas, uploaded with one async copy on dst's runtime stream and applied to dst_pool's
 * device table (dst_pool's pinned table is not read: src's pool holds the one logical table). The
 * engines must plan alike (same shape, settings, max_batch and GPU model) and dst_pool's table must have
 * src's pool's shape. If dst does not get the plan (any failure after src resolved), src's plan's deltas
 * are marked dirty again in src's pool, so the next plan sends them to every engine. info is dst's plan
 * (its plan_id is what pkv_decode_run on dst takes). */
pkv_status pkv_decode_plan_copy(pkv_decode_engine *src, pkv_decode_engine *dst, pkv_kvpool *dst_pool,
                                pkv_plan_info *info);

/* ---- several query tokens per row: speculative verification and chunked prefill ----------------
 * A row may bring q_len >= 1 new tokens, the newest q_len of its context: its query token j sits at
 * position seq_len - q_len + j and attends to context positions 0 .. that position (causal among the
 * new tokens). q, out are [total query tokens][num_qo_heads][head_dim], rows in batch order (row b's
 * tokens start at the sum of the earlier rows' q_len); lse is float [total query tokens][num_qo_heads].
 * Rows of q_len 1 run on the decode kernels exactly as pkv_decode_plan runs them, and so do rows of
 * q_len x group <= 16 (speculative drafts) on engines whose decode body is the tensor-core one (16-bit
 * pages, head dims 64 and 128): one 16-row MMA tile holds a row's query rows either way. Longer rows run
 * on the multi-query kernels. All share one plan: the run entries (pkv_decode_run, _run_device) take it.
 * A plan with rows on the multi-query kernels (pkv_plan_info.kernel PKV_KERNEL_MULTIQUERY) cannot be
 * captured into a graph (its launches' counts and buffers change between plans); one whose rows all run
 * on the decode kernels can, as a decode plan can, and its graph replays later such plans. Such plans run
 * kernel instantiations of their own: a graph captured over a decode plan replays decode plans only. */
#define PKV_KERNEL_MULTIQUERY 2 /* pkv_plan_info.kernel of a plan with rows on the multi-query kernels */

/* The reference: as pkv_reference_decode with row b's query tokens q_indptr[b] .. q_indptr[b+1]
 * (q_indptr[0] = 0, non-decreasing, each row's count <= its seq_len). */
pkv_status pkv_reference_multiquery(const pkv_attention_shape *shape, int32_t batch, const int32_t *q_indptr,
                                    const int32_t *page_indptr, const int32_t *page_indices, const int32_t *seq_lens,
                                    const void *k_pages, const void *v_pages, int32_t num_pages, const void *q,
                                    void *out, float *lse);
/* As pkv_decode_plan, with q_lens[b] in 1..seq_lens[b] query tokens for row b (NULL: 1 each, which is
 * pkv_decode_plan). seq_lens count the new tokens, which the caller has written to the pool first. */
pkv_status pkv_decode_plan_q(pkv_decode_engine *engine, pkv_kvpool *pool, int32_t batch, const int32_t *rows,
                             const int32_t *seq_lens, const int32_t *q_lens, int32_t policy, pkv_plan_info *info);
/* The query tokens (q and out rows) of the engine's current plan: the sum of its q_lens. */
pkv_status pkv_decode_plan_query_tokens(pkv_decode_engine *engine, int32_t plan_id, int32_t *out);
/* The dense tensor-core rate the multi-query kernels' instruction reaches (mma.m16n8k16, dtype operands,
 * fp32 accumulators, operands in registers: an upper bound of any mma.sync matrix multiply), in TFLOP/s,
 * median of `iterations` timed launches over every multiprocessor. CUDA backend only. */
pkv_status pkv_probe_mma_tflops(pkv_runtime *rt, int32_t dtype, int32_t iterations, double *tflops);

#ifdef __cplusplus
}
#endif
#endif /* PERSISTENTKV_H */
