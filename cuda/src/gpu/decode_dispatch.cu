// The single dispatch point from run-time (dtype, head dim) to the compiled instantiations
// (decode_<dtype>_d<head dim>.cu; FP8 pages: decode_fp8_<query dtype>_d<head dim>.cu).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../core/internal.h"
#include "decode_launch.h"

namespace pkv {

template <typename Q> struct Fp8E4m3;  // decode_task_fp8.cuh: FP8 pages with Q queries

template <typename T, int D>
pkv_status launch_decode_typed(int32_t kernel, DecodeBody body, const DecodeParams &p, int32_t grid, bool overlap,
                               cudaStream_t stream);
template <typename T, int D>
pkv_status decode_blocks_per_sm_typed(int32_t kernel, DecodeBody body, int32_t *out);

#define PKV_DECODE_DISPATCH(dtype, head_dim, CALL)                                                            \
  do {                                                                                                        \
    if (dtype == PKV_DTYPE_F16) {                                                                             \
      if (head_dim == 64) return CALL(__half, 64);                                                            \
      if (head_dim == 128) return CALL(__half, 128);                                                          \
      if (head_dim == 256) return CALL(__half, 256);                                                          \
    } else if (dtype == PKV_DTYPE_BF16) {                                                                     \
      if (head_dim == 64) return CALL(__nv_bfloat16, 64);                                                     \
      if (head_dim == 128) return CALL(__nv_bfloat16, 128);                                                   \
      if (head_dim == 256) return CALL(__nv_bfloat16, 256);                                                   \
    } else if (dtype == PKV_DTYPE_FP8_E4M3) {                                                                 \
      if (head_dim == 64) return CALL(Fp8E4m3<__half>, 64);                                                   \
      if (head_dim == 128) return CALL(Fp8E4m3<__half>, 128);                                                 \
      if (head_dim == 256) return CALL(Fp8E4m3<__half>, 256);                                                 \
    } else if (dtype == PKV_DTYPE_FP8_E4M3_BF16) {                                                            \
      if (head_dim == 64) return CALL(Fp8E4m3<__nv_bfloat16>, 64);                                            \
      if (head_dim == 128) return CALL(Fp8E4m3<__nv_bfloat16>, 128);                                          \
      if (head_dim == 256) return CALL(Fp8E4m3<__nv_bfloat16>, 256);                                          \
    }                                                                                                         \
    return fail(PKV_ERR_UNSUPPORTED, "decode: dtype %d with head dim %d has no kernel (f16/bf16/fp8 x 64/128/256)", \
                dtype, head_dim);                                                                             \
  } while (0)

pkv_status launch_decode(int32_t kernel, DecodeBody body, int32_t dtype, int32_t head_dim, const DecodeParams &p,
                         int32_t grid, cudaStream_t stream, bool overlap) {
  if (grid <= 0) return PKV_OK;
#define PKV_CALL_LAUNCH(T, D) launch_decode_typed<T, D>(kernel, body, p, grid, overlap, stream)
  PKV_DECODE_DISPATCH(dtype, head_dim, PKV_CALL_LAUNCH);
#undef PKV_CALL_LAUNCH
}

pkv_status decode_blocks_per_sm(int32_t kernel, DecodeBody body, int32_t dtype, int32_t head_dim, int32_t *out) {
#define PKV_CALL_OCCUPANCY(T, D) decode_blocks_per_sm_typed<T, D>(kernel, body, out)
  PKV_DECODE_DISPATCH(dtype, head_dim, PKV_CALL_OCCUPANCY);
#undef PKV_CALL_OCCUPANCY
}

}  // namespace pkv
