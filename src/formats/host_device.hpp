// Marks functions usable from host code and from CUDA device code alike.
#pragma once

#if defined(__CUDACC__)
#define MXMOE_HD __host__ __device__ __forceinline__
#else
#define MXMOE_HD inline
#endif
