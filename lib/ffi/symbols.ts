// The whole FFI symbol table: one entry per function of cuda/include/persistentkv.h.
// test/ffi/symbols.test.ts checks every entry against the header (name and argument count).
import { FFIType as T } from "bun:ffi";

const status = T.i32;
const handle = T.ptr; // opaque pointers travel as numbers
const out = T.ptr; // out-parameters: a typed array passed directly (never ptr() of a small array)
const host = T.ptr; // host arrays read or written before the call returns

export const symbols = {
  pkv_abi_version: { args: [], returns: T.i32 },
  pkv_version: { args: [], returns: T.cstring },
  pkv_last_error: { args: [], returns: T.cstring },
  pkv_status_name: { args: [T.i32], returns: T.cstring },
  pkv_cuda_device_count: { args: [], returns: T.i32 },

  pkv_runtime_create: { args: [T.i32, T.i32, out], returns: status },
  pkv_runtime_destroy: { args: [handle], returns: status },
  pkv_runtime_synchronize: { args: [handle], returns: status },
  pkv_device_info_size: { args: [], returns: T.i32 },
  pkv_device_info_get: { args: [handle, out], returns: status },

  pkv_buffer_alloc: { args: [handle, T.i32, T.u64, out], returns: status },
  pkv_buffer_free: { args: [handle], returns: status },
  pkv_buffer_address: { args: [handle, out], returns: status },
  pkv_buffer_size: { args: [handle, out], returns: status },
  pkv_buffer_kind: { args: [handle, out], returns: status },
  pkv_buffer_write: { args: [handle, T.u64, host, T.u64], returns: status },
  pkv_buffer_read: { args: [handle, T.u64, host, T.u64], returns: status },
  pkv_buffer_copy: { args: [handle, T.u64, handle, T.u64, T.u64, handle], returns: status },
  pkv_buffer_fill: { args: [handle, T.u64, T.u32, T.u64, handle], returns: status },

  pkv_stream_create: { args: [handle, out], returns: status },
  pkv_stream_destroy: { args: [handle], returns: status },
  pkv_stream_synchronize: { args: [handle], returns: status },
  pkv_event_create: { args: [handle, out], returns: status },
  pkv_event_destroy: { args: [handle], returns: status },
  pkv_event_record: { args: [handle, handle], returns: status },
  pkv_event_synchronize: { args: [handle], returns: status },
  pkv_event_query: { args: [handle, out], returns: status },
  pkv_event_elapsed_ms: { args: [handle, handle, out], returns: status },

  pkv_capture_begin: { args: [handle, handle], returns: status },
  pkv_capture_end: { args: [handle, handle, out], returns: status },
  pkv_graph_launch: { args: [handle, handle], returns: status },
  pkv_graph_destroy: { args: [handle], returns: status },

  pkv_probe_read_bandwidth: { args: [handle, T.u64, T.i32, out], returns: status },
  pkv_flush_l2: { args: [handle, handle], returns: status },

  pkv_reference_decode: {
    args: [host, T.i32, host, host, host, host, host, T.i32, host, host, host],
    returns: status,
  },

  // ---- paged KV pool
  pkv_kvpool_create: { args: [handle, host, out], returns: status },
  pkv_kvpool_destroy: { args: [handle], returns: status },
  pkv_kvpool_table_addresses: { args: [handle, out, out], returns: status },
  pkv_kvpool_write: { args: [handle, T.i32, T.i32, host, host, host], returns: status },
  pkv_kvpool_write_device: { args: [handle, T.i32, T.i32, host, handle, T.u64, handle, T.u64], returns: status },
  pkv_kvpool_read: { args: [handle, T.i32, T.i32, host, host, host], returns: status },
  pkv_kvpool_copy_pages: { args: [handle, T.i32, host, host], returns: status },
  pkv_kvpool_swap_out: { args: [handle, T.i32, host, host], returns: status },
  pkv_kvpool_swap_in: { args: [handle, T.i32, host, host], returns: status },
  pkv_kvpool_layer_addresses: { args: [handle, T.i32, out, out], returns: status },

  // ---- FP8 KV storage
  pkv_kv_layer_page_bytes: { args: [T.i32, T.i32, T.i32, T.i32], returns: T.i64 },
  pkv_kvpool_read_raw: { args: [handle, T.i32, T.i32, host, host, host, host, host], returns: status },
  pkv_fp8_e4m3_encode: { args: [T.i64, host, host], returns: status },
  pkv_fp8_e4m3_decode: { args: [T.i64, host, host], returns: status },

  // ---- decode engine
  pkv_plan_info_size: { args: [], returns: T.i32 },
  pkv_decode_engine_create: { args: [handle, host, out], returns: status },
  pkv_decode_engine_destroy: { args: [handle], returns: status },
  pkv_engine_settings_defaults: { args: [out], returns: status },
  pkv_decode_engine_create_with: { args: [handle, host, handle, host, out], returns: status },
  pkv_decode_engine_settings: { args: [handle, out], returns: status },
  pkv_decode_set_policy_table: { args: [handle, host, T.i32], returns: status },
  pkv_decode_plan: { args: [handle, handle, T.i32, host, host, T.i32, out], returns: status },
  pkv_decode_run: { args: [handle, T.i32, T.i32, host, host, host], returns: status },
  pkv_decode_run_device: {
    args: [handle, T.i32, T.i32, handle, T.u64, handle, T.u64, handle, T.u64, handle],
    returns: status,
  },

  // ---- interop: caller-owned memory, streams, pools and page tables; memory sizing
  pkv_buffer_wrap: { args: [handle, T.i32, T.u64, T.u64, out], returns: status },
  pkv_buffer_is_wrapped: { args: [handle, out], returns: status },
  pkv_stream_wrap: { args: [handle, T.u64, out], returns: status },
  pkv_stream_native: { args: [handle, out], returns: status },
  pkv_runtime_memory_info: { args: [handle, out, out], returns: status },
  pkv_kvpool_layout_size: { args: [], returns: T.i32 },
  pkv_kvpool_layout_get: { args: [handle, T.i32, out], returns: status },
  pkv_kv_page_bytes: { args: [host, out], returns: status },
  pkv_kvpool_wrap: { args: [handle, host, host, host, out], returns: status },
  pkv_decode_plan_paged: { args: [handle, handle, T.i32, host, host, host, T.i32, out], returns: status },
  pkv_decode_plan_block_table: { args: [handle, handle, T.i32, host, T.i32, host, T.i32, out], returns: status },
  // ---- synthetic model (tests and benchmarks)
  pkv_synthetic_forward: {
    args: [handle, handle, T.i32, T.i32, T.i32, handle, T.u64, handle, T.u64, handle],
    returns: status,
  },
  pkv_synthetic_prefill: { args: [handle, handle, T.i32, handle, T.u64, handle], returns: status },
  pkv_synthetic_sample: { args: [T.i32, T.i32, handle, T.u64, handle, T.u64, handle], returns: status },
  // ---- several devices of one host (lib/sharded)
  pkv_runtime_enable_peer_access: { args: [handle, handle], returns: status },
  pkv_buffer_copy_rows: {
    args: [handle, T.u64, T.u64, handle, T.u64, T.u64, T.u64, T.u64, handle],
    returns: status,
  },
  pkv_decode_plan_copy: { args: [handle, handle, handle, out], returns: status },
  // ---- several query tokens per row (speculative verification, chunked prefill)
  pkv_reference_multiquery: {
    args: [host, T.i32, host, host, host, host, host, host, T.i32, host, host, host],
    returns: status,
  },
  pkv_decode_plan_q: { args: [handle, handle, T.i32, host, host, host, T.i32, out], returns: status },
  pkv_decode_plan_query_tokens: { args: [handle, T.i32, out], returns: status },
  pkv_probe_mma_tflops: { args: [handle, T.i32, T.i32, out], returns: status },
} as const;

export type Symbols = typeof symbols;
