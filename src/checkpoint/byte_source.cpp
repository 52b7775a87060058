#include "checkpoint/byte_source.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "mxmoe/error.hpp"

namespace mxmoe::checkpoint {
namespace {

class MappedFile : public ByteSource {
 public:
  explicit MappedFile(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(ErrorCode::Io, "cannot open '" + path + "': " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      fail(ErrorCode::Io, "'" + path + "' is not a regular file");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        fail(ErrorCode::Io, "cannot map '" + path + "': " + std::strerror(err));
      }
      data_ = static_cast<const std::uint8_t*>(p);
    }
    ::close(fd);  // the mapping outlives the descriptor
  }
  ~MappedFile() override {
    if (data_) ::munmap(const_cast<std::uint8_t*>(data_), size_);
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
