// The kernels' launchers report CUDA errors through the library's one check
// (include/mxmoe/device_buffer.hpp); these names keep the kernels' calls short.
#pragma once

#include "mxmoe/device_buffer.hpp"

namespace mxmoe::kernels {

using mxmoe::check_cuda;
using mxmoe::check_launch;

}  // namespace mxmoe::kernels
