#include <string>

#include "mxmoe/device_buffer.hpp"
#include "mxmoe/error.hpp"
#include "prepare/prepare_gpu.hpp"
#include "kernels/tile_layout_w4a8.hpp"
#include "prepare/w4a8_row_base.hpp"

namespace mxmoe::tiling {
namespace {

// One thread per (expert, tile, chunk, g): it reads the two canonical rows g and g+8 of the chunk
// (32 bytes each, 16-byte loads) and writes the 64 bytes of lanes 4g..4g+3, i.e. tiled_word for
// those lanes, computed from registers. The K tail (a half chunk) goes through tiled_word itself.
__global__ void tile_weights_kernel(const std::uint8_t* __restrict__ weights, const std::uint8_t* __restrict__ scales,
                                    TiledShape s, int num_experts, std::uint8_t* __restrict__ out) {
  const std::int64_t per_expert = static_cast<std::int64_t>(s.tiles()) * s.chunks() * 8;
  const std::int64_t id = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= per_expert * num_experts) return;
  const int expert = static_cast<int>(id / per_expert);
  const std::int64_t rem = id % per_expert;
  const int g = static_cast<int>(rem % 8);
  const int chunk = static_cast<int>((rem / 8) % s.chunks());
  const int tile = static_cast<int>(rem / 8 / s.chunks());
  const std::uint8_t* mat = weights + static_cast<std::int64_t>(expert) * s.rows * (s.k / 2);
  // NVFP4: the expert's canonical scales, for zeroing the codes of blocks whose scale is 0.
  const std::uint8_t* nv_scales = s.group == 16 ? scales + static_cast<std::int64_t>(expert) * s.rows * s.groups() : nullptr;
  std::uint8_t* dst = out + expert * s.weight_bytes();
  // The chunk's 32 bytes of rows g and g+8, read with 16-byte loads when rows are 16-byte aligned
  // (K a multiple of 32; NVFP4 allows K = 16 mod 32, whose chunks all take the byte-wise path).
  const bool full_chunk = (chunk + 1) * (kChunkK / 2) <= s.k / 2 && (s.k / 2) % 16 == 0;
  alignas(16) std::uint8_t lo[32];
  alignas(16) std::uint8_t hi[32];
  const bool zero_blocks = nv_scales != nullptr;  // NVFP4 goes through tiled_word, which zeroes them
  if (full_chunk && !zero_blocks) {
    const uint4* lo_src = reinterpret_cast<const uint4*>(mat + static_cast<std::int64_t>(canonical_row(s, tile * kTileRows + g)) * (s.k / 2) + chunk * 32);
    const uint4* hi_src = reinterpret_cast<const uint4*>(mat + static_cast<std::int64_t>(canonical_row(s, tile * kTileRows + g + 8)) * (s.k / 2) + chunk * 32);
    *reinterpret_cast<uint4*>(lo) = lo_src[0];
    *reinterpret_cast<uint4*>(lo + 16) = lo_src[1];
    *reinterpret_cast<uint4*>(hi) = hi_src[0];
    *reinterpret_cast<uint4*>(hi + 16) = hi_src[1];
  }
#pragma unroll
  for (int t = 0; t < 4; ++t) {
    const int lane = g * 4 + t;
    uint4 v;
    if (full_chunk && !zero_blocks) {
      // Row byte b of the chunk holds k = 2b, 2b+1; word s of lane t uses bytes 8s+t and 8s+t+4.
      std::uint32_t w[4];
#pragma unroll
      for (int step = 0; step < 4; ++step)
        w[step] = fragment_word(lo[8 * step + t], hi[8 * step + t], lo[8 * step + t + 4], hi[8 * step + t + 4], s.f16);
      v = make_uint4(w[0], w[1], w[2], w[3]);
    } else {
      v = make_uint4(tiled_word(mat, s, tile, chunk, lane, 0, nv_scales), tiled_word(mat, s, tile, chunk, lane, 1, nv_scales),
                     tiled_word(mat, s, tile, chunk, lane, 2, nv_scales), tiled_word(mat, s, tile, chunk, lane, 3, nv_scales));
    }
    *reinterpret_cast<uint4*>(dst + tiled_word_offset(s, tile, chunk, lane, 0)) = v;
  }
}

// One thread per (expert, tile, chunk): the chunk's 32 (MXFP4) or 64 (NVFP4) scale bytes, written
// as 16-byte stores.
__global__ void tile_scales_kernel(const std::uint8_t* __restrict__ scales, TiledShape s, int num_experts,
                                   std::uint8_t* __restrict__ out) {
  const std::int64_t per_expert = static_cast<std::int64_t>(s.tiles()) * s.chunks();
  const std::int64_t id = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= per_expert * num_experts) return;
  const int expert = static_cast<int>(id / per_expert);
  const std::int64_t rem = id % per_expert;
  const int chunk = static_cast<int>(rem % s.chunks()), tile = static_cast<int>(rem / s.chunks());
  const std::uint8_t* mat = scales + static_cast<std::int64_t>(expert) * s.rows * s.groups();
  constexpr int kMaxBytes = chunk_scale_bytes(16);
  alignas(16) std::uint8_t bytes[kMaxBytes];
  const int n = s.chunk_scale_bytes();
#pragma unroll
  for (int i = 0; i < kMaxBytes; ++i)
    if (i < n) bytes[i] = tiled_scale(mat, s, tile, chunk, i);
  uint4* dst = reinterpret_cast<uint4*>(out + expert * s.scale_bytes() + tiled_scale_offset(s, tile, chunk, 0));
#pragma unroll
  for (int i = 0; i < kMaxBytes / 16; ++i)
    if (i * 16 < n) dst[i] = *reinterpret_cast<const uint4*>(bytes + 16 * i);
}

// W4A8: one thread per (expert, canonical row): its base and factor 2^base (exact in fp32, a
// subnormal down to 2^-133).
__global__ void w4a8_bases_kernel(const std::uint8_t* __restrict__ weights, const std::uint8_t* __restrict__ scales, TiledShape s,
                                  int num_experts, std::int32_t* __restrict__ bases, float* __restrict__ row_factor) {
  const std::int64_t id = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= static_cast<std::int64_t>(s.rows) * num_experts) return;
  const int base = ::mxmoe::w4a8::row_base(weights + id * (s.k / 2), scales + id * s.groups(), s.k);
  bases[id] = base;
  row_factor[id] = ldexpf(1.0f, base);
}

// W4A8: one thread per (expert, tile, chunk, lane): the lane's four prepared words; lanes 0 and 1 also
// write the chunk's 32 table indices, 16 each.
__global__ void tile_w4a8_kernel(const std::uint8_t* __restrict__ weights, const std::uint8_t* __restrict__ scales,
                                 const std::int32_t* __restrict__ bases, TiledShape s, int num_experts,
                                 std::uint8_t* __restrict__ tiled_weights, std::uint8_t* __restrict__ tiled_scales) {
  const std::int64_t per_expert = static_cast<std::int64_t>(s.tiles()) * s.chunks() * 32;
  const std::int64_t id = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= per_expert * num_experts) return;
  const int expert = static_cast<int>(id / per_expert);
  const std::int64_t rem = id % per_expert;
  const int lane = static_cast<int>(rem % 32), chunk = static_cast<int>((rem / 32) % s.chunks()), tile = static_cast<int>(rem / 32 / s.chunks());
  const std::uint8_t* mat = weights + static_cast<std::int64_t>(expert) * s.rows * (s.k / 2);
  const uint4 v = make_uint4(w4a8::tiled_word(mat, s, tile, chunk, lane, 0), w4a8::tiled_word(mat, s, tile, chunk, lane, 1),
                             w4a8::tiled_word(mat, s, tile, chunk, lane, 2), w4a8::tiled_word(mat, s, tile, chunk, lane, 3));
  *reinterpret_cast<uint4*>(tiled_weights + expert * s.weight_bytes() + tiled_word_offset(s, tile, chunk, lane, 0)) = v;
  if (lane < 2) {
    const std::uint8_t* sc = scales + static_cast<std::int64_t>(expert) * s.rows * s.groups();
    const std::int32_t* base = bases + static_cast<std::int64_t>(expert) * s.rows;
    alignas(16) std::uint8_t bytes[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) bytes[i] = w4a8::tiled_table_index(sc, base, s, tile, chunk, 16 * lane + i);
    *reinterpret_cast<uint4*>(tiled_scales + expert * s.scale_bytes() + tiled_scale_offset(s, tile, chunk, 16 * lane)) =
        *reinterpret_cast<const uint4*>(bytes);
  }
}

}  // namespace

void launch_tile_matrices(const std::uint8_t* weights, const std::uint8_t* scales, const TiledShape& shape,
                          int num_experts, std::uint8_t* tiled_weights, std::uint8_t* tiled_scales, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const std::int64_t weight_threads = static_cast<std::int64_t>(shape.tiles()) * shape.chunks() * 8 * num_experts;
  const std::int64_t scale_threads = static_cast<std::int64_t>(shape.tiles()) * shape.chunks() * num_experts;
  tile_weights_kernel<<<static_cast<unsigned>((weight_threads + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      weights, scales, shape, num_experts, tiled_weights);
  tile_scales_kernel<<<static_cast<unsigned>((scale_threads + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      scales, shape, num_experts, tiled_scales);
  check_launch("prepare (tile layout) launch");
}

void launch_tile_matrices_w4a8(const std::uint8_t* weights, const std::uint8_t* scales, const TiledShape& shape, int num_experts,
                               std::int32_t* bases, std::uint8_t* tiled_weights, std::uint8_t* tiled_scales, float* row_factor,
                               cudaStream_t stream) {
  if (shape.group != 32 || shape.f16) fail(ErrorCode::InvalidArgument, "prepare (W4A8): MXFP4 matrices with bf16 activations only");
  constexpr int kThreads = 256;
  const std::int64_t row_threads = static_cast<std::int64_t>(shape.rows) * num_experts;
  const std::int64_t lane_threads = static_cast<std::int64_t>(shape.tiles()) * shape.chunks() * 32 * num_experts;
  w4a8_bases_kernel<<<static_cast<unsigned>((row_threads + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      weights, scales, shape, num_experts, bases, row_factor);
  tile_w4a8_kernel<<<static_cast<unsigned>((lane_threads + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      weights, scales, bases, shape, num_experts, tiled_weights, tiled_scales);
  check_launch("prepare (W4A8 tile layout) launch");
}

}  // namespace mxmoe::tiling
