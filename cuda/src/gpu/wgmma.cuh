// Hopper warpgroup MMAs (wgmma, sm_90a only): a warpgroup of 4 warps computes a 64-row tile with fp32
// accumulators, its B operand (and A, for S = Q K^T) read from shared memory through a descriptor.
// Accumulator layout: warp w of the group owns rows 16w..16w+15, and within a warp each 8-column
// n-tile j is mma.sync's C fragment (d[4j + e]), so the m16n8k16 softmax and P packing carry over.
//
// Shared-memory operands use the 128-byte swizzle: a tile of `rows` rows x 64 16-bit columns is rows x
// 128 bytes, 16-byte chunk c of row r stored at chunk c ^ (r % 8), with the 8-row atoms 1024-byte
// aligned; a head dim of 128 is two such blocks one after the other (wg_chunk_offset).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace pkv {

// Byte offset of 16-byte chunk `chunk` (of D / 8) of row `row` in a swizzled [rows][D] tile.
__device__ __forceinline__ uint32_t wg_chunk_offset(int rows, int row, int chunk) {
  return (uint32_t)((chunk >> 3) * rows * 128 + row * 128 + (((chunk & 7) ^ (row & 7)) << 4));
}

// A descriptor of a 128-byte-swizzled operand at shared address `addr`: `lbo` is the byte distance
// between 64-column blocks along M/N for an N-major (transposed) operand (unused for K-major ones),
// `sbo` the distance between 8-row groups.
__device__ __forceinline__ uint64_t wg_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return (uint64_t)((addr & 0x3FFFF) >> 4) | ((uint64_t)(lbo >> 4) << 16) | ((uint64_t)(sbo >> 4) << 32) | (1ull << 62);
}

// The descriptor of the operand `bytes` further on (the address field holds addresses below 256 KB,
// so the sum never carries out of it).
__device__ __forceinline__ uint64_t wg_desc_add(uint64_t desc, uint32_t bytes) { return desc + (bytes >> 4); }

__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most `Pending` of this warpgroup's committed groups are still running (groups complete
// in order).
template <int Pending = 0>
__device__ __forceinline__ void wg_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(Pending) : "memory");
}
// Shared memory written by ordinary stores or cp.async becomes visible to wgmma's (async proxy) reads.
__device__ __forceinline__ void wg_proxy_fence() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// The compiler does not know that an issued MMA writes its accumulators later: passing them through an
// empty asm right after the wait (and before the issue) keeps every read and write of them in place.
template <int N>
__device__ __forceinline__ void wg_fence_operands(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}

// The barrier receives this thread's arrival once all its earlier cp.async copies have landed; it
// counts against the barrier's expected arrivals (noinc), so the copying thread never waits for them.
__device__ __forceinline__ void cp_async_arrive(uint64_t *bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"((unsigned)__cvta_generic_to_shared(bar)) : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint64_t *bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"((unsigned)__cvta_generic_to_shared(bar)) : "memory");
}

// Waits for an mbarrier phase, suspended in between (the waiting warps leave the issue slots to the
// others) rather than spinning.
__device__ __forceinline__ void mbar_wait_parity_sleep(uint64_t *bar, unsigned parity) {
  asm volatile(
      "{\n .reg .pred p;\n WAIT_SLEEP:\n"
      " mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1, %2;\n"
      " @!p bra WAIT_SLEEP;\n}\n" ::"r"((unsigned)__cvta_generic_to_shared(bar)),
      "r"(parity), "n"(1000000) : "memory");
}

template <typename T> struct WgMma;

// Accumulator operand lists: M("+f") or M("=f") applied to d[i..i + 15].
#define PKV_WG_D4(M, d, i) M(d[i]), M(d[i + 1]), M(d[i + 2]), M(d[i + 3])
#define PKV_WG_D16(M, d, i) PKV_WG_D4(M, d, i), PKV_WG_D4(M, d, i + 4), PKV_WG_D4(M, d, i + 8), PKV_WG_D4(M, d, i + 12)
#define PKV_WG_D32(M, d) PKV_WG_D16(M, d, 0), PKV_WG_D16(M, d, 16)
#define PKV_WG_D64(M, d) PKV_WG_D32(M, d), PKV_WG_D16(M, d, 32), PKV_WG_D16(M, d, 48)
#define PKV_WG_R32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define PKV_WG_R64 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"

// The MMAs of one 16-bit operand type TY ("f16" or "bf16"), N = 64 or 128 accumulator columns (N / 2
// registers a thread):
// - ss: D (64 x N) = A B, or D += A B when `accumulate` (D's old values unread otherwise), A and B
//   K-major in shared memory: S = Q K^T of an N-token tile;
// - rs: D (64 x N) += A B, A in registers (P, one k-step of 16 tokens), B N-major in shared memory (V,
//   N = the head dim).
#define PKV_WGMMA_OPS(TY)                                                                                                            \
  template <int N>                                                                                                                   \
  static __device__ __forceinline__ void ss(float (&d)[N / 2], uint64_t a, uint64_t b, bool accumulate) {                            \
    static_assert(N == 64 || N == 128, "64 or 128 columns");                                                                         \
    if constexpr (N == 64)                                                                                                           \
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\nwgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " PKV_WG_R32  \
                   ", %32, %33, p, 1, 1, 0, 0;\n}\n"                                                                                 \
                   : PKV_WG_D32("+f", d)                                                                                             \
                   : "l"(a), "l"(b), "r"((uint32_t)accumulate));                                                                     \
    else                                                                                                                             \
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\nwgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " " PKV_WG_R64 \
                   ", %64, %65, p, 1, 1, 0, 0;\n}\n"                                                                                 \
                   : PKV_WG_D64("+f", d)                                                                                             \
                   : "l"(a), "l"(b), "r"((uint32_t)accumulate));                                                                     \
  }                                                                                                                                  \
  template <int N>                                                                                                                   \
  static __device__ __forceinline__ void rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t b) {                                 \
    static_assert(N == 64 || N == 128, "head dims 64 and 128");                                                                      \
    if constexpr (N == 64)                                                                                                           \
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\nwgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " PKV_WG_R32  \
                   ", {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"                                                                   \
                   : PKV_WG_D32("+f", d)                                                                                             \
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(1));                                                    \
    else                                                                                                                             \
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\nwgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " " PKV_WG_R64 \
                   ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"                                                                   \
                   : PKV_WG_D64("+f", d)                                                                                             \
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(1));                                                    \
  }

template <> struct WgMma<__half> {
  PKV_WGMMA_OPS("f16")
};
template <> struct WgMma<__nv_bfloat16> {
  PKV_WGMMA_OPS("bf16")
};
#undef PKV_WGMMA_OPS
#undef PKV_WG_R64
#undef PKV_WG_R32
#undef PKV_WG_D64
#undef PKV_WG_D32
#undef PKV_WG_D16
#undef PKV_WG_D4

}  // namespace pkv
