// The operand type of a GEMM: bf16 or fp16 (W4A16: how E2M1 nibbles become its bits, its exact
// pairwise multiply, its tensor-core MMAs: mma.sync and wgmma), or e4m3 (W4A8: wgmma only, the
// activations one byte each; mma.sync m16n8k32 and wgmma k32); and how an fp32 result (GEMM1's
// intermediate) is stored.
// For the wgmma kernel each type says how many one-instruction K steps a 64-K chunk takes
// (kStepsPerChunk: k16 for 16-bit, k32 for e4m3) and issues one step; every step reads 32 bytes of a
// 128-byte swizzled activation row (gemm/wgmma.cuh), so the kernel finds step i of a stage at slab
// i / 4, descriptor offset (i % 4) x 32 bytes, for either type.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/dequant.hpp"
#include "kernels/gemm/wgmma.cuh"
#include "kernels/ptx.cuh"

namespace mxmoe::kernels::gemm {

// An fp32 result as bf16 bits: the hardware's round-to-nearest-even conversion (one F2F), the same
// bits as formats::float_to_bf16 for every non-NaN value (NaN becomes the canonical NaN).
__device__ __forceinline__ std::uint16_t store_bf16(float v) { return __bfloat16_as_ushort(__float2bfloat16_rn(v)); }

struct Bf16Operands {
  using WgmmaType = ptx::Bf16Tag;
  static constexpr int kActBytes = 2, kStepsPerChunk = 4;
  template <int kAcc>
  __device__ static void wgmma_step(float (&d)[kAcc], const std::uint32_t (&a)[4], std::uint64_t desc) {
    ptx::wgmma_m64k16<WgmmaType>(d, a, desc);
  }
  template <int P>
  __device__ static std::uint32_t nibbles(std::uint32_t word) { return e2m1_pair_bits<P>(word); }  // v x 2^-126
  __device__ static std::uint32_t mul(std::uint32_t a, std::uint32_t b) { return ptx::mul_bf16x2(a, b); }
  __device__ static void mma(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
    ptx::mma_bf16_16816(d, a, b0, b1);
  }
  __device__ static std::uint16_t store(float v) { return store_bf16(v); }
};

struct F16Operands {
  using WgmmaType = ptx::F16Tag;
  static constexpr int kActBytes = 2, kStepsPerChunk = 4;
  template <int kAcc>
  __device__ static void wgmma_step(float (&d)[kAcc], const std::uint32_t (&a)[4], std::uint64_t desc) {
    ptx::wgmma_m64k16<WgmmaType>(d, a, desc);
  }
  template <int P>
  __device__ static std::uint32_t nibbles(std::uint32_t word) { return e2m1_pair_bits_f16<P>(word); }  // v x 2^-14
  __device__ static std::uint32_t mul(std::uint32_t a, std::uint32_t b) { return ptx::mul_f16x2(a, b); }
  __device__ static void mma(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
    ptx::mma_f16_16816(d, a, b0, b1);
  }
  __device__ static std::uint16_t store(float v) { return __half_as_ushort(__float2half_rn(v)); }
};

// W4A8: e4m3 weights (converted in registers, weight_formats.cuh: Mxfp4E4m3) x e4m3 activations
// (quantised per row beforehand, kernels/quantize_e4m3.hpp); the intermediate GEMM1 writes is bf16.
// Its mma.sync step is k32, so a[step] of the A fragments holds k32 steps 0 and 1 of a chunk.
struct E4m3Operands {
  static constexpr int kActBytes = 1, kStepsPerChunk = 2;
  __device__ static void mma(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
    ptx::mma_e4m3_16832(d, a, b0, b1);
  }
  template <int kAcc>
  __device__ static void wgmma_step(float (&d)[kAcc], const std::uint32_t (&a)[4], std::uint64_t desc) {
    ptx::wgmma_m64k32_e4m3(d, a, desc);
  }
  __device__ static std::uint16_t store(float v) { return store_bf16(v); }
};

}  // namespace mxmoe::kernels::gemm
