// The W4A8 fold's per-row base exponent (the rule and its exactness argument: w4a8_fold.hpp), as
// host/device functions: the CPU fold and the GPU prepare (prepare_gpu.cu) compute it by this one code.
#pragma once

#include <cstdint>

#include "formats/host_device.hpp"

namespace mxmoe::w4a8 {

constexpr int kBaseBelowMax = 6;  // base = (b_max - 127) - 6: the largest group reaches 384
constexpr int kGroupCodes = 32;

// Whether a group's 32 packed codes (16 bytes) are all +-0 (every nibble's magnitude bits clear).
MXMOE_HD bool zero_group(const std::uint8_t* packed16) {
  std::uint32_t any = 0;
  for (int i = 0; i < kGroupCodes / 2; ++i) any |= packed16[i];
  return (any & 0x77u) == 0;
}

// The base exponent of one row from its packed codes [k/2] and E8M0 scales [k/32]: over the non-zero
// groups, (largest scale byte - 127) - kBaseBelowMax; 0 for a row with no non-zero group.
MXMOE_HD int row_base(const std::uint8_t* packed, const std::uint8_t* scales, std::int64_t k) {
  int b_max = -1;
  for (std::int64_t g = 0; g < k / kGroupCodes; ++g)
    if (scales[g] > b_max && !zero_group(packed + g * (kGroupCodes / 2))) b_max = scales[g];
  return b_max < 0 ? 0 : (b_max - 127) - kBaseBelowMax;
}

}  // namespace mxmoe::w4a8
