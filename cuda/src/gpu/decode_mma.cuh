// Tensor-core primitives: mma.m16n8k16 with fp32 accumulators, ldmatrix (plain and transposed) from
// swizzled shared memory, and packing fp32 pairs into the 16-bit operand type.
#pragma once
#include "decode_vec.cuh"

namespace pkv {

template <typename T> struct MmaOp;
// D = A * B + D for one 16x8x16 tile; the operand type is the only difference between the two.
#define PKV_MMA_OP(T, ptx_type)                                                                                  \
  template <> struct MmaOp<T> {                                                                                \
    static __device__ __forceinline__ void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) { \
      asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." ptx_type "." ptx_type                              \
                   ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"                               \
                   : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                                             \
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));                             \
    }                                                                                                          \
  };
PKV_MMA_OP(__half, "f16")
PKV_MMA_OP(__nv_bfloat16, "bf16")
#undef PKV_MMA_OP

// Four 8x8 matrices; lane l gives the address of row l % 8 of matrix l / 8.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void *row) {
  unsigned addr = (unsigned)__cvta_generic_to_shared(row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void *row) {
  unsigned addr = (unsigned)__cvta_generic_to_shared(row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  auto v = Pair<T>::from_float2(lo, hi);
  return *reinterpret_cast<uint32_t *>(&v);
}

}  // namespace pkv
