// Warpgroup MMA (sm_90a wgmma) for the compute-bound GEMM path: the A operand (weights, 64 rows:
// one 16-row tile per warp of the warpgroup) from registers, in exactly the fragment layout of
// mma.sync.m16n8k16's A, which the tile layout already gives each lane; B (tokens x K, K-major)
// from shared memory through a matrix descriptor; fp32 accumulators in the m16n8 C layout per
// n8 block: d[4j + {0,1}] row g, d[4j + {2,3}] row g + 8, columns 8j + 2t + {0,1}.
// The m64nNk16 wrappers are written for N = 16, 32, 64 and 128 (one asm statement per shape and type;
// the PTX syntax is the ISA's, operands in order d, a, b-desc, scale-d, imm-scale-a, imm-scale-b,
// imm-trans-b).
#pragma once

#include <cstdint>

namespace mxmoe::kernels::ptx {

struct Bf16Tag {};
struct F16Tag {};
struct E4m3Tag {};  // W4A8: m64nNk32, e4m3 x e4m3 (no transpose operand: 8-bit B is K-major only)

// Shared-memory matrix descriptor of a K-major tile whose rows are 128 bytes (64 16-bit values),
// stored with the 128-byte swizzle (16-byte unit u of row r at r * 128 + ((u ^ (r % 8)) * 16), the
// 8-row atom 1024-byte aligned): start address, leading offset (unused for swizzled K-major; 16 B),
// stride offset 1024 B between 8-row groups, swizzle mode 1 (128 B) in bits 62-63. A k16 step s
// inside the 64-wide tile starts 32 * s bytes further (the swizzle acts on absolute address bits).
__device__ __forceinline__ std::uint64_t smem_desc_k128_swizzled(std::uint32_t smem_address) {
  return static_cast<std::uint64_t>((smem_address & 0x3FFFF) >> 4) | (static_cast<std::uint64_t>(1) << 16) |
         (static_cast<std::uint64_t>(1024 >> 4) << 32) | (static_cast<std::uint64_t>(1) << 62);
}
// Byte offset of 16-byte unit `unit` (0..7) of row `row` in such a tile.
__host__ __device__ constexpr int swizzled_k128_offset(int row, int unit) { return row * 128 + ((unit ^ (row % 8)) * 16); }

// Registers written by ordinary instructions (A fragments, accumulators) before wgmma reads them.
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most N committed groups of this warpgroup are pending.
template <int N>
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
// Shared memory written through the generic proxy (cp.async, ordinary stores) that wgmma, an async
// proxy reader, reads next: each writing thread fences before the barrier.
__device__ __forceinline__ void fence_proxy_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Pins an accumulator register in program order against the wgmma asm statements (the compiler does
// not know they complete asynchronously): applied before the first MMA and after the last wait.
__device__ __forceinline__ void fence_operand(float& r) { asm volatile("" : "+f"(r)::"memory"); }
// A warpgroup's accumulators set to zero and pinned before its first wgmma.
template <int N>
__device__ __forceinline__ void wgmma_zero_accumulators(float (&acc)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    acc[i] = 0.0f;
    fence_operand(acc[i]);
  }
}

// One wrapper per shape, instantiated for both operand types (the type only names the PTX).
#define MXMOE_WGMMA_M64N16K16(TYPE, Tag) \
  __device__ __forceinline__ void wgmma_m64n16k16(float(&d)[8], const std::uint32_t(&a)[4], std::uint64_t desc_b, Tag) { \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n" \
                 "wgmma.mma_async.sync.aligned.m64n16k16.f32." TYPE "." TYPE " " \
                 "{%0,%1,%2,%3,%4,%5,%6,%7}, " \
                 "{%8,%9,%10,%11}, %12, p, 1, 1, 0;\n}\n" \
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]) \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b)); \
  }
#define MXMOE_WGMMA_M64N32K16(TYPE, Tag) \
  __device__ __forceinline__ void wgmma_m64n32k16(float(&d)[16], const std::uint32_t(&a)[4], std::uint64_t desc_b, Tag) { \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n" \
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32." TYPE "." TYPE " " \
                 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, " \
                 "{%16,%17,%18,%19}, %20, p, 1, 1, 0;\n}\n" \
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]) \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b)); \
  }
#define MXMOE_WGMMA_M64N64K16(TYPE, Tag) \
  __device__ __forceinline__ void wgmma_m64n64k16(float(&d)[32], const std::uint32_t(&a)[4], std::uint64_t desc_b, Tag) { \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n" \
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32." TYPE "." TYPE " " \
                 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, " \
                 "{%32,%33,%34,%35}, %36, p, 1, 1, 0;\n}\n" \
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]) \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b)); \
  }
#define MXMOE_WGMMA_M64N128K16(TYPE, Tag) \
  __device__ __forceinline__ void wgmma_m64n128k16(float(&d)[64], const std::uint32_t(&a)[4], std::uint64_t desc_b, Tag) { \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n" \
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE " " \
                 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, " \
                 "{%64,%65,%66,%67}, %68, p, 1, 1, 0;\n}\n" \
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]) \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b)); \
  }

MXMOE_WGMMA_M64N16K16("bf16", Bf16Tag)
MXMOE_WGMMA_M64N16K16("f16", F16Tag)
MXMOE_WGMMA_M64N32K16("bf16", Bf16Tag)
MXMOE_WGMMA_M64N32K16("f16", F16Tag)
MXMOE_WGMMA_M64N64K16("bf16", Bf16Tag)
MXMOE_WGMMA_M64N64K16("f16", F16Tag)
MXMOE_WGMMA_M64N128K16("bf16", Bf16Tag)
MXMOE_WGMMA_M64N128K16("f16", F16Tag)
#undef MXMOE_WGMMA_M64N16K16
#undef MXMOE_WGMMA_M64N32K16
#undef MXMOE_WGMMA_M64N64K16
#undef MXMOE_WGMMA_M64N128K16

// FP8 (W4A8): k32 per instruction; A's four registers hold four e4m3 bytes each (rows g, g+8 x k
// 4t..4t+3 and 16+4t..16+4t+3: kernels/tile_layout_w4a8.hpp); B through the same K-major
// 128-byte-swizzled descriptor, a k32 step of one-byte values spanning the 32 bytes of a bf16 k16
// step. No imm-trans-b: 8-bit operands are K-major only.
__device__ __forceinline__ void wgmma_m64n16k32(float (&d)[8], const std::uint32_t (&a)[4], std::uint64_t desc_b, E4m3Tag) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n16k32.f32.e4m3.e4m3 "
               "{%0,%1,%2,%3,%4,%5,%6,%7}, "
               "{%8,%9,%10,%11}, %12, p, 1, 1;\n}\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}
__device__ __forceinline__ void wgmma_m64n32k32(float (&d)[16], const std::uint32_t (&a)[4], std::uint64_t desc_b, E4m3Tag) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n32k32.f32.e4m3.e4m3 "
               "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, "
               "{%16,%17,%18,%19}, %20, p, 1, 1;\n}\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}
__device__ __forceinline__ void wgmma_m64n64k32(float (&d)[32], const std::uint32_t (&a)[4], std::uint64_t desc_b, E4m3Tag) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 "
               "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, "
               "{%32,%33,%34,%35}, %36, p, 1, 1;\n}\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}
__device__ __forceinline__ void wgmma_m64n128k32(float (&d)[64], const std::uint32_t (&a)[4], std::uint64_t desc_b, E4m3Tag) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
               "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
               "{%64,%65,%66,%67}, %68, p, 1, 1;\n}\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}

}  // namespace mxmoe::kernels::ptx

namespace mxmoe::kernels::ptx {

// m64nNk16 by its accumulator count (N / 2 per thread) and operand type tag.
template <class Tag, int kAcc>
__device__ __forceinline__ void wgmma_m64k16(float (&d)[kAcc], const std::uint32_t (&a)[4], std::uint64_t desc_b) {
  if constexpr (kAcc == 8) wgmma_m64n16k16(d, a, desc_b, Tag{});
  else if constexpr (kAcc == 16) wgmma_m64n32k16(d, a, desc_b, Tag{});
  else if constexpr (kAcc == 32) wgmma_m64n64k16(d, a, desc_b, Tag{});
  else {
    static_assert(kAcc == 64, "wgmma N is 16, 32, 64 or 128 here");
    wgmma_m64n128k16(d, a, desc_b, Tag{});
  }
}
// m64nNk32 e4m3 by its accumulator count.
template <int kAcc>
__device__ __forceinline__ void wgmma_m64k32_e4m3(float (&d)[kAcc], const std::uint32_t (&a)[4], std::uint64_t desc_b) {
  if constexpr (kAcc == 8) wgmma_m64n16k32(d, a, desc_b, E4m3Tag{});
  else if constexpr (kAcc == 16) wgmma_m64n32k32(d, a, desc_b, E4m3Tag{});
  else if constexpr (kAcc == 32) wgmma_m64n64k32(d, a, desc_b, E4m3Tag{});
  else {
    static_assert(kAcc == 64, "wgmma N is 16, 32, 64 or 128 here");
    wgmma_m64n128k32(d, a, desc_b, E4m3Tag{});
  }
}

}  // namespace mxmoe::kernels::ptx
