// The 16-bit operand type of a GEMM (bf16 or fp16): how E2M1 nibbles become its bits, its exact
// pairwise multiply, its tensor-core MMAs (mma.sync, and the wgmma type tag), and how an fp32 result is stored in it.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "formats/bf16.hpp"
#include "kernels/dequant.hpp"
#include "kernels/gemm/wgmma.cuh"
#include "kernels/ptx.cuh"

namespace mxmoe::kernels::gemm {

struct Bf16Operands {
  using WgmmaType = ptx::Bf16Tag;
  template <int P>
  __device__ static std::uint32_t nibbles(std::uint32_t word) { return e2m1_pair_bits<P>(word); }  // v x 2^-126
  __device__ static std::uint32_t mul(std::uint32_t a, std::uint32_t b) { return ptx::mul_bf16x2(a, b); }
  __device__ static void mma(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
    ptx::mma_bf16_16816(d, a, b0, b1);
  }
  __device__ static std::uint16_t store(float v) { return formats::float_to_bf16(v); }
};

struct F16Operands {
  using WgmmaType = ptx::F16Tag;
  template <int P>
  __device__ static std::uint32_t nibbles(std::uint32_t word) { return e2m1_pair_bits_f16<P>(word); }  // v x 2^-14
  __device__ static std::uint32_t mul(std::uint32_t a, std::uint32_t b) { return ptx::mul_f16x2(a, b); }
  __device__ static void mma(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
    ptx::mma_f16_16816(d, a, b0, b1);
  }
  __device__ static std::uint16_t store(float v) { return __half_as_ushort(__float2half_rn(v)); }
};

}  // namespace mxmoe::kernels::gemm
