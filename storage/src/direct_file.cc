#include "storage/src/direct_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lienthong/common/status_macros.h"

namespace lienthong::storage {
namespace {

constexpr uint64_t RoundDown(uint64_t n) { return n & ~(kDirectAlign - 1); }
constexpr uint64_t RoundUp(uint64_t n) {
  return RoundDown(n + kDirectAlign - 1);
}

bool IsDirect(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  return flags >= 0 && (flags & O_DIRECT) != 0;
}

// Clears O_DIRECT on `fd`: the file system refused an aligned transfer.
bool TurnDirectOff(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  return flags >= 0 && ::fcntl(fd, F_SETFL, flags & ~O_DIRECT) == 0;
}

absl::Status Errno(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat("attachments: ", what, " ", path,
                                          ": ", std::strerror(errno)));
}

absl::Status PwriteAll(int fd, const char* data, uint64_t len, uint64_t at,
                       const std::string& path) {
  while (len > 0) {
    ssize_t n = ::pwrite(fd, data, len, static_cast<off_t>(at));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("write", path);
    }
    data += n;
    len -= static_cast<uint64_t>(n);
    at += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

// Writes `bytes` at `at`; if the file system refuses O_DIRECT, turns it off
// on `fd`, writes them the ordinary way and sets `*fell_back`.
absl::Status WriteBlocksAt(int fd, const std::string& path, const char* data,
                           size_t bytes, uint64_t at, bool* fell_back) {
  while (bytes > 0) {
    ssize_t n = ::pwrite(fd, data, bytes, static_cast<off_t>(at));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EINVAL && IsDirect(fd)) {
        if (!TurnDirectOff(fd)) return Errno("fcntl(O_DIRECT off)", path);
        *fell_back = true;
        return PwriteAll(fd, data, bytes, at, path);
      }
      return Errno("write", path);
    }
    data += n;
    bytes -= static_cast<size_t>(n);
    at += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

// Reads up to `span` bytes (whole blocks) at `start` into `buf` with
// O_DIRECT, stopping at the end of the file; `*got` is what was read.
// `*refused`: the file system refused O_DIRECT (EINVAL before any byte).
absl::Status PreadBlocks(int fd, const std::string& path, char* buf,
                         uint64_t span, uint64_t start, uint64_t* got,
                         bool* refused) {
  *got = 0;
  while (*got < span) {
    ssize_t n =
        ::pread(fd, buf + *got, span - *got, static_cast<off_t>(start + *got));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EINVAL && *got == 0) {
        *refused = true;
        return absl::OkStatus();
      }
      return Errno("read", path);
    }
    *got += static_cast<uint64_t>(n);
    // A short read ends at the end of the file (the next offset would not
    // be aligned anyway).
    if (n == 0 || static_cast<uint64_t>(n) % kDirectAlign != 0) break;
  }
  return absl::OkStatus();
}

absl::Status Truncated(const std::string& path, uint64_t has, uint64_t needs) {
  return absl::DataLossError(
      absl::StrCat("attachments: ", path, " is truncated: ", has,
                   " bytes where at least ", needs, " should be"));
}

}  // namespace

void AlignedBuffer::Free::operator()(char* p) const { std::free(p); }

void AlignedBuffer::Reserve(size_t bytes, size_t keep) {
  if (bytes <= capacity_) return;
  assert(keep <= capacity_);
  size_t capacity = RoundUp(bytes);
  void* p = nullptr;
  if (::posix_memalign(&p, kDirectAlign, capacity) != 0) throw std::bad_alloc();
  if (keep > 0) std::memcpy(p, data_.get(), keep);
  data_.reset(static_cast<char*>(p));
  capacity_ = capacity;
}

int OpenMaybeDirect(const std::string& path, int flags, bool direct,
                    mode_t mode) {
  if (direct) {
    int fd = ::open(path.c_str(), flags | O_DIRECT, mode);
    if (fd >= 0 || errno != EINVAL) return fd;
  }
  return ::open(path.c_str(), flags, mode);
}

absl::StatusOr<SharedBytes> ReadShared(int fd, uint64_t len, uint64_t at,
                                       const std::string& path) {
  struct Memory {
    AlignedBuffer aligned;  // read into past the page cache
    std::string plain;      // read into the ordinary way
  };
  auto memory = std::make_shared<Memory>();
  if (len > 0 && IsDirect(fd)) {
    // The aligned blocks around [at, at + len); the last may be cut short
    // by the end of the file.
    const uint64_t start = RoundDown(at);
    const uint64_t span = RoundUp(at + len) - start;
    memory->aligned.Reserve(span);
    uint64_t got = 0;
    bool refused = false;
    RETURN_IF_ERROR(PreadBlocks(fd, path, memory->aligned.data(), span, start,
                                &got, &refused));
    if (!refused) {
      if (start + got < at + len) return Truncated(path, start + got, at + len);
      const absl::string_view read(memory->aligned.data() + (at - start), len);
      return SharedBytes{std::move(memory), read};
    }
    if (!TurnDirectOff(fd)) return Errno("fcntl(O_DIRECT off)", path);
  }
  std::string& plain = memory->plain;
  plain.resize(len);
  uint64_t got = 0;
  while (got < len) {
    ssize_t n = ::pread(fd, plain.data() + got, len - got,
                        static_cast<off_t>(at + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("read", path);
    }
    if (n == 0) return Truncated(path, at + got, at + len);
    got += static_cast<uint64_t>(n);
  }
  const absl::string_view read(plain);
  return SharedBytes{std::move(memory), read};
}

DirectAppender::DirectAppender(int fd, std::string path, uint64_t end)
    : fd_(fd),
      path_(std::move(path)),
      direct_(IsDirect(fd)),
      end_(end),
      tail_start_(direct_ ? RoundDown(end) : end),
      // A partial block before `end` is read back by the first Append.
      positioned_(tail_start_ == end),
      cut_needed_(true),
      synced_(end) {}

DirectAppender::~DirectAppender() { Land().IgnoreError(); }

absl::Status DirectAppender::Land() {
  if (!flight_.pending()) return absl::OkStatus();
  absl::Status written = flight_.Take();
  if (flight_fell_back_) {
    flight_fell_back_ = false;
    RETURN_IF_ERROR(FallBack());
  }
  return written;
}

absl::Status DirectAppender::Seek(uint64_t at) {
  RETURN_IF_ERROR(Land());
  if (direct_ && positioned_ && at >= tail_start_ && at <= end_) {
    // Back inside the block held in memory: buf_ still has what precedes.
    end_ = at;
    cut_needed_ = true;
    synced_ = std::min(synced_, at);
    return absl::OkStatus();
  }
  end_ = at;
  tail_start_ = direct_ ? RoundDown(at) : at;
  positioned_ = true;
  cut_needed_ = true;
  synced_ = std::min(synced_, at);
  const uint64_t held = at - tail_start_;
  if (held == 0) return absl::OkStatus();
  buf_.Reserve(kDirectAlign);
  uint64_t got = 0;
  bool refused = false;
  RETURN_IF_ERROR(PreadBlocks(fd_, path_, buf_.data(), kDirectAlign,
                              tail_start_, &got, &refused));
  if (refused) {
    tail_start_ = end_;  // nothing held: it is all in the file
    return FallBack();
  }
  if (got < held) return Truncated(path_, tail_start_ + got, at);
  return absl::OkStatus();
}

absl::Status DirectAppender::FallBack() {
  if (!TurnDirectOff(fd_)) return Errno("fcntl(O_DIRECT off)", path_);
  direct_ = false;
  // What was held back goes to the file now; later writes go straight.
  const uint64_t held = end_ - tail_start_;
  if (held > 0)
    RETURN_IF_ERROR(PwriteAll(fd_, buf_.data(), held, tail_start_, path_));
  tail_start_ = end_;
  return absl::OkStatus();
}

absl::Status DirectAppender::WriteBlocks(const char* data, size_t bytes,
                                         uint64_t at) {
  bool fell_back = false;
  absl::Status s = WriteBlocksAt(fd_, path_, data, bytes, at, &fell_back);
  if (fell_back) direct_ = false;
  return s;
}

absl::Status DirectAppender::Append(
    uint64_t at, absl::Span<const absl::string_view> pieces) {
  staged_.reset();
  if (!failed_.ok()) return failed_;
  absl::Status s = DoAppend(at, pieces);
  if (!s.ok()) failed_ = s;
  return s;
}

absl::StatusOr<char*> DirectAppender::Stage(uint64_t at, size_t bytes) {
  staged_.reset();
  if (!failed_.ok()) return failed_;
  absl::StatusOr<char*> into = DoStage(at, bytes);
  if (!into.ok()) {
    failed_ = into.status();
  } else {
    staged_ = bytes;
  }
  return into;
}

absl::Status DirectAppender::Commit() {
  if (!failed_.ok()) return failed_;
  if (!staged_) {
    return absl::InternalError(absl::StrCat(
        "attachments: ", path_, ": a commit with nothing staged before it"));
  }
  absl::Status s = DoCommit(*std::exchange(staged_, std::nullopt));
  if (!s.ok()) failed_ = s;
  return s;
}

absl::Status DirectAppender::Sync() {
  staged_.reset();
  if (!failed_.ok()) return failed_;
  absl::Status s = DoSync();
  if (!s.ok()) failed_ = s;
  return s;
}

absl::Status DirectAppender::DoAppend(
    uint64_t at, absl::Span<const absl::string_view> pieces) {
  RETURN_IF_ERROR(Land());
  if (at != end_ || !positioned_) RETURN_IF_ERROR(Seek(at));
  size_t bytes = 0;
  for (absl::string_view piece : pieces) bytes += piece.size();
  if (!direct_) {
    // Straight from the pieces: nothing is held back.
    uint64_t to = at;
    for (absl::string_view piece : pieces) {
      RETURN_IF_ERROR(PwriteAll(fd_, piece.data(), piece.size(), to, path_));
      to += piece.size();
    }
    WrittenBehind(bytes);
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(char* into, DoStage(at, bytes));
  for (absl::string_view piece : pieces) {
    if (piece.empty()) continue;  // an empty one may have no data()
    std::memcpy(into, piece.data(), piece.size());
    into += piece.size();
  }
  return DoCommit(bytes);
}

absl::StatusOr<char*> DirectAppender::DoStage(uint64_t at, size_t bytes) {
  RETURN_IF_ERROR(Land());
  if (at != end_ || !positioned_) RETURN_IF_ERROR(Seek(at));
  // After the partial block held back (none when not direct).
  const size_t held = end_ - tail_start_;
  buf_.Reserve(held + bytes, held);
  return buf_.data() + held;
}

void DirectAppender::WrittenBehind(size_t bytes) {
  // Start writing it back now, without waiting: the disk works while the
  // next records arrive, and the sync finds little left.
  ::sync_file_range(fd_, static_cast<off_t>(end_), static_cast<off_t>(bytes),
                    SYNC_FILE_RANGE_WRITE);
  end_ += bytes;
  tail_start_ = end_;
}

absl::Status DirectAppender::DoCommit(size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  if (!direct_) {
    RETURN_IF_ERROR(PwriteAll(fd_, buf_.data(), bytes, end_, path_));
    WrittenBehind(bytes);
    return absl::OkStatus();
  }
  const size_t held = end_ - tail_start_ + bytes;
  end_ += bytes;
  const size_t whole = RoundDown(held);
  if (whole == 0) return absl::OkStatus();
  // The whole blocks go to the disk in the background while the caller
  // goes on (an O_DIRECT write waits for the device); the partial block
  // after them moves to the other buffer, which takes the next records.
  spare_.Reserve(held - whole);
  std::memcpy(spare_.data(), buf_.data() + whole, held - whole);
  std::swap(buf_, spare_);
  const uint64_t blocks_at = tail_start_;
  tail_start_ += whole;
  if (!flight_.Start([this, whole, blocks_at] {
        return WriteBlocksAt(fd_, path_, spare_.data(), whole, blocks_at,
                             &flight_fell_back_);
      })) {
    // No thread to spare: written here.
    RETURN_IF_ERROR(WriteBlocks(spare_.data(), whole, blocks_at));
    if (!direct_) return FallBack();  // and the partial block after
  }
  return absl::OkStatus();
}

absl::Status DirectAppender::DoSync() {
  RETURN_IF_ERROR(Land());
  // Opened at an end inside a block and nothing appended since: that block
  // is read back first, so that the padded write below rewrites it whole.
  if (!positioned_) RETURN_IF_ERROR(Seek(end_));
  if (direct_ && tail_start_ < end_) {
    // The partial block, padded to a whole one; cut back below.
    const size_t held = end_ - tail_start_;
    buf_.Reserve(kDirectAlign, held);
    std::memset(buf_.data() + held, 0, kDirectAlign - held);
    RETURN_IF_ERROR(WriteBlocks(buf_.data(), kDirectAlign, tail_start_));
    cut_needed_ = true;
    if (!direct_) tail_start_ = end_;  // fell back: the block is written
  }
  if (cut_needed_) {
    if (::ftruncate(fd_, static_cast<off_t>(end_)) != 0)
      return Errno("truncate", path_);
    cut_needed_ = false;
  }
  if (::fdatasync(fd_) != 0) return Errno("fdatasync", path_);
  if (!direct_) {
    // Written once, read rarely: kept cached, it would push the store's
    // hot pages out. Only after the sync: no page is dirty.
    ::posix_fadvise(fd_, static_cast<off_t>(synced_), 0, POSIX_FADV_DONTNEED);
  }
  synced_ = end_;
  return absl::OkStatus();
}

}  // namespace lienthong::storage
