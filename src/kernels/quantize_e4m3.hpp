// W4A8's activation quantisation (issue 14): rows of bf16 values to E4M3 bytes and one fp32 scale per
// row, by the oracle's rule (formats/e4m3.hpp: fp8_row_scale, fp8_quantize; reference.hpp says where
// the forward applies it): scale = amax / 448, q = e4m3(x x (1 / scale)).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mxmoe::kernels {

// in [rows, cols] bf16 (cols a multiple of 8, rows 16-byte aligned) -> out [rows, cols] E4M3 and
// scale [rows]. One CTA per row reads it twice (the amax, then the bytes: the second read hits L2).
// Launched as a programmatic dependent of the stream's previous kernel, which it waits for before
// reading (input_from_previous: the intermediate GEMM1 wrote) or before it ends (the hidden states),
// so its completion implies its predecessor's; the next kernel may launch as soon as it starts.
void launch_quantize_rows_e4m3(const std::uint16_t* in, int rows, int cols, std::uint8_t* out, float* scale, bool input_from_previous,
                               cudaStream_t stream);

}  // namespace mxmoe::kernels
