#include "checkpoint/regular_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "mxmoe/error.hpp"

namespace mxmoe::checkpoint {

const char* file_kind(unsigned mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a named pipe (FIFO)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

int open_regular_file(const std::string& path, const std::string& what, std::uint64_t* size) {
  struct stat before {};
  if (::stat(path.c_str(), &before) != 0) {
    const int err = errno;
    fail(err == ENOENT ? ErrorCode::NotFound : ErrorCode::Io, "cannot open '" + path + "' (" + what + "): " + std::strerror(err));
  }
  if (!S_ISREG(before.st_mode))
    fail(ErrorCode::Io, what + " '" + path + "' is " + file_kind(before.st_mode) + ", not a regular file");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail(ErrorCode::Io, "cannot open '" + path + "' (" + what + "): " + std::strerror(errno));
  struct stat after {};
  if (::fstat(fd, &after) != 0 || !S_ISREG(after.st_mode) || after.st_ino != before.st_ino || after.st_dev != before.st_dev) {
    ::close(fd);
    fail(ErrorCode::Io, what + " '" + path + "' was replaced while it was being opened");
  }
  if (size) *size = static_cast<std::uint64_t>(after.st_size);
  return fd;
}

std::string read_regular_text(const std::string& path, const std::string& what, std::uint64_t max_bytes) {
  std::uint64_t size = 0;
  const int fd = open_regular_file(path, what, &size);
  if (size > max_bytes) {
    ::close(fd);
    fail(ErrorCode::Format, what + " '" + path + "' is " + std::to_string(size) + " bytes, more than the " + std::to_string(max_bytes) +
                                " accepted");
  }
  std::string text(static_cast<std::size_t>(size), '\0');
  std::size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  text.resize(got);  // a file that shrank since fstat() is read as far as it goes
  return text;
}

}  // namespace mxmoe::checkpoint
