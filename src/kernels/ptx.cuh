// Thin wrappers over the PTX instructions the GEMM uses (sm_80+ mma.sync / ldmatrix / cp.async,
// sm_90 bf16x2 multiply).
#pragma once

#include <cstdint>

namespace mxmoe::kernels::ptx {

__device__ __forceinline__ std::uint32_t smem_addr(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global->shared copy to a shared-space address (smem_addr of the CTA's base, taken once,
// plus offsets: from a generic pointer every copy re-derived the shared window, S2UR SR_CgaCtaId and
// ULEA, in the issue-bound decode K loop); src_bytes 0 writes zeros (used for padding rows and K
// past the end).
__device__ __forceinline__ void cp_async16(std::uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
// The same, issued only where `pred` holds (a predicated instruction, no branch).
__device__ __forceinline__ void cp_async16_if(bool pred, std::uint32_t dst, const void* src, int src_bytes) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %0, 0;\n@p cp.async.cg.shared.global [%1], [%2], 16, %3;\n}\n" ::"r"(static_cast<int>(pred)),
      "r"(dst), "l"(src), "r"(src_bytes));
}
// Both on a generic pointer to shared memory.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int src_bytes) { cp_async16(smem_addr(dst), src, src_bytes); }
__device__ __forceinline__ void cp_async16_if(bool pred, void* dst, const void* src, int src_bytes) {
  cp_async16_if(pred, smem_addr(dst), src, src_bytes);
}
// 4-byte global->shared copy through L1 (cp.async's smallest size; .cg takes 16 only).
__device__ __forceinline__ void cp_async4(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(smem_addr(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t addr) {  // a shared-space address
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const void* p) { ldmatrix_x4(r, smem_addr(p)); }

// D = A(16x16 bf16, row) * B(16x8 bf16, col) + D, fp32 accumulators.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// W4A8 on mma.sync: A four e4m3 registers (rows g, g+8 x k 4t..4t+3, 16+4t..16+4t+3), B two (k 4t..,
// 16+4t.. of column g), fp32 accumulators as m16n8k16's.
__device__ __forceinline__ void mma_e4m3_16832(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ std::uint32_t mul_bf16x2(std::uint32_t a, std::uint32_t b) {
  std::uint32_t d;
  asm("mul.rn.bf16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

}  // namespace mxmoe::kernels::ptx

namespace mxmoe::kernels::ptx {

// Programmatic dependent launch (sm_90): a kernel launched with programmatic stream serialization
// may start while its predecessor runs; grid_dependency_wait() blocks until the predecessor has
// finished and its writes are visible, and allow_dependents_launch() lets the successor start.
// Both are no-ops for a kernel launched without the attribute.
__device__ __forceinline__ void grid_dependency_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void allow_dependents_launch() { asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory"); }

}  // namespace mxmoe::kernels::ptx

namespace mxmoe::kernels::ptx {

// D = A(16x16 f16, row) * B(16x8 f16, col) + D, fp32 accumulators.
__device__ __forceinline__ void mma_f16_16816(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Exact for our operands (products of two short significands); subnormals are kept, not flushed.
__device__ __forceinline__ std::uint32_t mul_f16x2(std::uint32_t a, std::uint32_t b) {
  std::uint32_t d;
  asm("mul.rn.f16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

}  // namespace mxmoe::kernels::ptx
