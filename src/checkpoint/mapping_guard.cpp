#include "checkpoint/mapping_guard.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>

#include "mxmoe/safetensors.hpp"

namespace mxmoe::checkpoint {
namespace {

constexpr std::size_t kPathChars = 480;  // longer names are cut in the message, the guard still works

// One registered range. `begin` is published last (release) and cleared first, so the handler never
// reads a half-written slot; `claim` reserves a free slot for a writer.
struct Slot {
  std::atomic<bool> claimed{false};
  std::atomic<const char*> begin{nullptr};
  std::size_t size = 0;
  char path[kPathChars] = {};
};

constexpr std::size_t kMaps = 2048;  // more shards than any released model has
constexpr std::size_t kTemps = 16;
Slot g_maps[kMaps];
Slot g_temps[kTemps];

Slot* claim(Slot* slots, std::size_t n, const std::string& path) {
  for (std::size_t i = 0; i < n; ++i) {
    bool expected = false;
    if (!slots[i].claimed.compare_exchange_strong(expected, true)) continue;
    std::strncpy(slots[i].path, path.c_str(), kPathChars - 1);
    slots[i].path[kPathChars - 1] = '\0';
    return &slots[i];
  }
  return nullptr;
}

void release(Slot& s) {
  s.begin.store(nullptr, std::memory_order_release);
  s.claimed.store(false, std::memory_order_release);
}

// Async-signal-safe output: write(2) of literal pieces and decimal numbers.
void put(const char* s) {
  const ssize_t ignored = ::write(2, s, std::strlen(s));
  (void)ignored;
}
void put_number(std::uint64_t v) {
  char buf[24];
  int i = sizeof buf;
  buf[--i] = '\0';
  do buf[--i] = static_cast<char>('0' + v % 10), v /= 10;
  while (v && i > 0);
  put(buf + i);
}

void on_sigbus(int sig, siginfo_t* info, void*) {
  const char* addr = static_cast<const char*>(info->si_addr);
  for (auto& s : g_maps) {
    const char* b = s.begin.load(std::memory_order_acquire);
    if (!b || addr < b || addr >= b + s.size) continue;
    put("mxmoe: '");
    put(s.path);
    put("' shrank while mxmoe was reading it: byte ");
    put_number(static_cast<std::uint64_t>(addr - b));
    put(" of the ");
    put_number(s.size);
    put(" it had when opened is gone (was the file rewritten or truncated meanwhile?)\n");
    for (auto& t : g_temps)
      if (t.begin.load(std::memory_order_acquire)) ::unlink(t.path);
    ::_exit(2);
  }
  // Not one of our maps: the default action (returning re-runs the faulting access).
  ::signal(sig, SIG_DFL);
}

}  // namespace

void register_mapping(const void* begin, std::size_t size, const std::string& path) {
  if (Slot* s = claim(g_maps, kMaps, path)) {
    s->size = size;
    s->begin.store(static_cast<const char*>(begin), std::memory_order_release);
  }
}

void unregister_mapping(const void* begin) {
  for (auto& s : g_maps)
    if (s.begin.load(std::memory_order_acquire) == begin) return release(s);
}

void register_temp_output(const std::string& path) {
  if (Slot* s = claim(g_temps, kTemps, path)) s->begin.store(s->path, std::memory_order_release);
}

void unregister_temp_output(const std::string& path) {
  for (auto& s : g_temps)
    if (s.begin.load(std::memory_order_acquire) && path == s.path) return release(s);
}

}  // namespace mxmoe::checkpoint

namespace mxmoe {

void install_mapped_file_guard() {
  struct sigaction sa {};
  sa.sa_sigaction = checkpoint::on_sigbus;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGBUS, &sa, nullptr);
}

}  // namespace mxmoe
