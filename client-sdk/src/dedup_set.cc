#include "client-sdk/src/dedup_set.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace lienthong::client_internal {
namespace {

// Reads the whole file behind `fd` from its start.
bool ReadAll(int fd, std::string* out) {
  out->clear();
  char buf[1 << 16];
  off_t offset = 0;
  while (true) {
    ssize_t n = pread(fd, buf, sizeof(buf), offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) return true;
    out->append(buf, static_cast<size_t>(n));
    offset += n;
  }
}

bool WriteAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    ssize_t n = write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Complete (newline-terminated), non-empty lines of `content`; a trailing
// fragment without its newline is a write torn by a crash and is dropped.
std::vector<absl::string_view> CompleteLines(absl::string_view content,
                                             bool* torn_tail) {
  std::vector<absl::string_view> lines;
  *torn_tail = false;
  while (!content.empty()) {
    size_t newline = content.find('\n');
    if (newline == absl::string_view::npos) {
      *torn_tail = true;
      break;
    }
    absl::string_view line = content.substr(0, newline);
    content.remove_prefix(newline + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

bool IsStorableId(absl::string_view id) {
  return !id.empty() && id.find_first_of("\r\n") == absl::string_view::npos;
}

std::string DirectoryOf(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

DedupSet::DedupSet(size_t capacity) : DedupSet(capacity, std::string()) {}

DedupSet::DedupSet(size_t capacity, std::string state_file)
    : capacity_(capacity == 0 ? 1 : capacity),
      state_file_(std::move(state_file)) {}

DedupSet::~DedupSet() {
  absl::MutexLock lock(&file_mu_);
  if (fd_ >= 0) close(fd_);
}

absl::StatusOr<std::unique_ptr<DedupSet>> DedupSet::Open(
    size_t capacity, const std::string& state_file) {
  if (capacity == 0) {
    return absl::InvalidArgumentError("dedup_capacity: must be at least 1");
  }
  std::unique_ptr<DedupSet> set(new DedupSet(capacity, state_file));
  if (!state_file.empty()) {
    if (absl::Status s = set->Load(); !s.ok()) return s;
  }
  return set;
}

DedupSet::Digest DedupSet::DigestOf(absl::string_view id) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  if (EVP_Digest(id.data(), id.size(), md, &md_len, EVP_sha256(), nullptr) !=
          1 ||
      md_len < 16) {
    std::abort();  // SHA-256 unavailable: OpenSSL is unusable.
  }
  uint64_t high = 0;
  uint64_t low = 0;
  for (int i = 0; i < 8; ++i) high = (high << 8) | md[i];
  for (int i = 8; i < 16; ++i) low = (low << 8) | md[i];
  return absl::MakeUint128(high, low);
}

absl::Status DedupSet::FileError(absl::string_view what,
                                 int error_number) const {
  return absl::ErrnoToStatus(
      error_number,
      absl::StrCat("dedup_state_file \"", state_file_, "\": ", what));
}

absl::Status DedupSet::Load() {
  absl::MutexLock file_lock(&file_mu_);
  fd_ =
      open(state_file_.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd_ < 0) return FileError("cannot open", errno);
  std::string content;
  if (!ReadAll(fd_, &content)) return FileError("cannot read", errno);
  bool torn_tail = false;
  std::vector<absl::string_view> lines = CompleteLines(content, &torn_tail);
  {
    absl::MutexLock lock(&mu_);
    size_t first = lines.size() > capacity_ ? lines.size() - capacity_ : 0;
    for (size_t i = first; i < lines.size(); ++i) {
      InsertLocked(DigestOf(lines[i]));
    }
  }
  lines_in_file_ = lines.size();
  if (torn_tail || lines.size() > capacity_) return CompactLocked();
  return absl::OkStatus();
}

absl::Status DedupSet::CompactLocked() {
  std::string content;
  if (!ReadAll(fd_, &content)) return FileError("cannot read", errno);
  bool torn_tail = false;
  std::vector<absl::string_view> lines = CompleteLines(content, &torn_tail);
  size_t first = lines.size() > capacity_ ? lines.size() - capacity_ : 0;
  std::string kept;
  for (size_t i = first; i < lines.size(); ++i) {
    absl::StrAppend(&kept, lines[i], "\n");
  }

  const std::string temp = absl::StrCat(state_file_, ".tmp");
  int temp_fd =
      open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (temp_fd < 0) return FileError("cannot create its .tmp file", errno);
  if (!WriteAll(temp_fd, kept) || fsync(temp_fd) != 0) {
    int error_number = errno;
    close(temp_fd);
    unlink(temp.c_str());
    return FileError("cannot write its .tmp file", error_number);
  }
  close(temp_fd);
  if (rename(temp.c_str(), state_file_.c_str()) != 0) {
    int error_number = errno;
    unlink(temp.c_str());
    return FileError("cannot replace it by its compacted copy", error_number);
  }
  int dir_fd = open(DirectoryOf(state_file_).c_str(),
                    O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    fsync(dir_fd);  // best effort: makes the rename durable
    close(dir_fd);
  }
  int fd = open(state_file_.c_str(), O_RDWR | O_APPEND | O_CLOEXEC);
  if (fd < 0) return FileError("cannot reopen", errno);
  close(fd_);
  fd_ = fd;
  lines_in_file_ = lines.size() - first;
  return absl::OkStatus();
}

bool DedupSet::Contains(absl::string_view id) const {
  const Digest digest = DigestOf(id);
  absl::MutexLock lock(&mu_);
  return digests_.contains(digest);
}

bool DedupSet::Insert(absl::string_view id) {
  const Digest digest = DigestOf(id);
  absl::MutexLock lock(&mu_);
  return InsertLocked(digest);
}

bool DedupSet::InsertLocked(Digest digest) {
  if (!digests_.insert(digest).second) return false;
  order_.push_back(digest);
  if (order_.size() > capacity_) {
    digests_.erase(order_.front());
    order_.pop_front();
  }
  return true;
}

absl::Status DedupSet::Persist(const std::vector<std::string>& ids) {
  if (state_file_.empty()) return absl::OkStatus();
  std::string lines;
  size_t count = 0;
  for (const std::string& id : ids) {
    if (!IsStorableId(id)) continue;
    absl::StrAppend(&lines, id, "\n");
    ++count;
  }
  if (count == 0) return absl::OkStatus();

  absl::MutexLock file_lock(&file_mu_);
  if (fd_ < 0) return FileError("is not open", EBADF);
  struct stat before;
  if (fstat(fd_, &before) != 0) return FileError("cannot stat", errno);
  if (!WriteAll(fd_, lines)) {
    int error_number = errno;
    // Cut a torn line off so that later appends stay well-formed.
    if (ftruncate(fd_, before.st_size) != 0) {
      // Load() drops a torn tail anyway.
    }
    return FileError("cannot append", error_number);
  }
  if (fdatasync(fd_) != 0) return FileError("cannot sync", errno);
  lines_in_file_ += count;
  if (lines_in_file_ > 2 * capacity_) return CompactLocked();
  return absl::OkStatus();
}

absl::Status DedupSet::Add(const std::vector<std::string>& ids) {
  for (const std::string& id : ids) Insert(id);
  return Persist(ids);
}

size_t DedupSet::size() const {
  absl::MutexLock lock(&mu_);
  return order_.size();
}

}  // namespace lienthong::client_internal
