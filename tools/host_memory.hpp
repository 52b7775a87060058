// Host memory of a command's large buffers, checked before they are allocated, so that a size the
// machine cannot hold is a named usage error (exit 2) rather than std::bad_alloc or the OOM killer.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <new>
#include <sstream>
#include <string>

#include "mxmoe/error.hpp"

namespace mxmoe::cli {

inline std::uint64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page) : 0;
}

inline std::string gib(double bytes) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(1);
  s << bytes / double(1ull << 30) << " GiB";
  return s.str();
}

// Refuses `bytes` (what `what` needs, e.g. "--tokens 1000000000: hidden states, logits and outputs")
// when it exceeds the machine's physical memory; `bytes` is a double so that no product overflows.
inline void check_host_bytes(double bytes, const std::string& what) {
  const std::uint64_t have = physical_memory_bytes();
  if (have && bytes > static_cast<double>(have))
    fail(ErrorCode::InvalidArgument, what + " needs about " + gib(bytes) + " of host memory, more than the " + gib(static_cast<double>(have)) +
                                         " this machine has");
}

// Runs `f` (the allocations of `what`, about `bytes`); a std::bad_alloc becomes a named error.
template <class F>
auto allocating(const std::string& what, double bytes, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    fail(ErrorCode::InvalidArgument, "cannot allocate " + gib(bytes) + " of host memory for " + what);
  }
}

}  // namespace mxmoe::cli
