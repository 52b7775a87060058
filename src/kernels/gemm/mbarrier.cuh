// Shared-memory barriers (sm_90 mbarrier) for producer/consumer pipelines: a stage is "full" when
// the producer's copies into it have landed and "empty" when every consumer is done reading it.
#pragma once

#include <cstdint>

#include "kernels/ptx.cuh"

namespace mxmoe::kernels::ptx {

__device__ __forceinline__ void mbarrier_init(std::uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}

// One arrival (count 1) of this thread.
__device__ __forceinline__ void mbarrier_arrive(std::uint64_t* bar) {
  asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(smem_addr(bar)) : "memory");
}

// This thread's arrival, made when all its earlier cp.async copies have landed (noinc: the arrival
// counts against the barrier's expected count).
__device__ __forceinline__ void cp_async_mbarrier_arrive(std::uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}

// Waits until the phase of parity `parity` has completed (a fresh barrier counts its phase before
// the first as completed, so waiting on parity 1 passes at once).
__device__ __forceinline__ void mbarrier_wait(std::uint64_t* bar, std::uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n}\n" ::"r"(smem_addr(bar)),
      "r"(parity)
      : "memory");
}

// A barrier of `threads` threads (a warpgroup: 128) under hardware barrier `id` (0 is __syncthreads').
template <int id, int threads>
__device__ __forceinline__ void named_barrier_sync() { asm volatile("bar.sync %0, %1;\n" ::"n"(id), "n"(threads) : "memory"); }

__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

// Register budgets per warpgroup role (sm_90a; the kernel needs a register cap at entry).
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N)); }
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N)); }

}  // namespace mxmoe::kernels::ptx
