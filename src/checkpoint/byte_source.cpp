#include "checkpoint/byte_source.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "checkpoint/mapping_guard.hpp"
#include "checkpoint/regular_file.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::checkpoint {
namespace {

class MappedFile : public ByteSource {
 public:
  explicit MappedFile(const std::string& path) {
    std::uint64_t size = 0;
    const int fd = open_regular_file(path, "checkpoint file", &size);
    size_ = static_cast<std::size_t>(size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        fail(ErrorCode::Io, "cannot map '" + path + "': " + std::strerror(err));
      }
      data_ = static_cast<const std::uint8_t*>(p);
      register_mapping(data_, size_, path);  // a later shrink is reported by name (mapping_guard.hpp)
    }
    ::close(fd);  // the mapping outlives the descriptor
  }
  ~MappedFile() override {
    if (data_) {
      unregister_mapping(data_);
      ::munmap(const_cast<std::uint8_t*>(data_), size_);
    }
  }
};

class MemoryBytes : public ByteSource {
 public:
  explicit MemoryBytes(std::vector<std::uint8_t> bytes) : bytes_(std::move(bytes)) {
    data_ = bytes_.data();
    size_ = bytes_.size();
  }

 private:
  std::vector<std::uint8_t> bytes_;
};

}  // namespace

std::shared_ptr<const ByteSource> map_file(const std::string& path) { return std::make_shared<MappedFile>(path); }

std::shared_ptr<const ByteSource> hold_bytes(std::vector<std::uint8_t> bytes) {
  return std::make_shared<MemoryBytes>(std::move(bytes));
}

}  // namespace mxmoe::checkpoint
