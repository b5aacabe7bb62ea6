// Attachment files read and written past the page cache (O_DIRECT).
//
// Attachments are streamed once and read back rarely, so caching them only
// pushes the store's hot pages out. And on a virtual machine whose free
// memory goes back to the host (free page reporting), every page the page
// cache takes anew costs a fault in the host: reading a file the disk had
// to fetch then costs about five times the CPU of the copy itself. With
// O_DIRECT the disk reads into and writes from our own buffers, which stay
// mapped, and nothing is cached.
//
// O_DIRECT needs file offsets, lengths and memory aligned to the device's
// blocks (kDirectAlign covers every device here). Records of sealed chunks
// are not aligned, so DirectAppender keeps the last partial block in
// memory, writes whole blocks (in the background, one write at a time, so
// that the caller goes on while the device works), and writes that block
// padded (then cuts the file back to its length) when asked to make
// everything durable. Where the file system refuses O_DIRECT (tmpfs, some
// network file systems) both fall back to ordinary reads and writes on the
// same descriptor.
#ifndef LIENTHONG_STORAGE_SRC_DIRECT_FILE_H_
#define LIENTHONG_STORAGE_SRC_DIRECT_FILE_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "lienthong/common/background_job.h"
#include "lienthong/storage/attachments.h"

namespace lienthong::storage {

inline constexpr uint64_t kDirectAlign = 4096;

// A heap buffer aligned to kDirectAlign; grows, never shrinks.
class AlignedBuffer {
 public:
  char* data() { return data_.get(); }
  size_t capacity() const { return capacity_; }
  // Makes room for at least `bytes`, keeping the first `keep` bytes.
  void Reserve(size_t bytes, size_t keep = 0);

 private:
  struct Free {
    void operator()(char* p) const;
  };
  std::unique_ptr<char, Free> data_;
  size_t capacity_ = 0;
};

// Opens `path` with `flags` plus O_DIRECT where the file system takes it
// (`direct` false: never); -1 with errno set on failure.
int OpenMaybeDirect(const std::string& path, int flags, bool direct,
                    mode_t mode = 0600);

// Exactly `len` bytes at `at` of `fd`, in memory of their own that `owner`
// keeps: when `fd` is O_DIRECT the disk reads into it and nothing is
// copied, so a caller can hand the bytes on (to gRPC) as they are.
// DATA_LOSS naming `path` when the file is shorter. Turns O_DIRECT off on
// `fd` if the file system refuses an aligned read.
absl::StatusOr<SharedBytes> ReadShared(int fd, uint64_t len, uint64_t at,
                                       const std::string& path);

// Sequential writes to one file. One caller at a time; an error of the
// background write comes back from the next call. After any error every
// call fails with it: what reached the file is unknown (a failed
// fdatasync is not retried), the upload starts over from what a sync made
// durable before.
class DirectAppender {
 public:
  // Takes `fd` (not owned), positioned at `end`: nothing after it counts,
  // and the first Sync cuts the file there.
  DirectAppender(int fd, std::string path, uint64_t end = 0);
  // Waits for a write still going on in the background.
  ~DirectAppender();
  DirectAppender(const DirectAppender&) = delete;
  DirectAppender& operator=(const DirectAppender&) = delete;

  bool direct() const { return direct_; }
  uint64_t end() const { return end_; }

  // Writes `bytes` at `at`: the end, or any earlier offset to go on from
  // there (what followed is dropped). Durable only after Sync.
  absl::Status Append(uint64_t at, absl::string_view bytes) {
    return Append(at, absl::MakeConstSpan(&bytes, 1));
  }
  // Writes `pieces`, one after the other, at `at` (one write for them all).
  absl::Status Append(uint64_t at, absl::Span<const absl::string_view> pieces);
  // An Append in two steps, for a caller that checks bytes as it copies
  // them in (reading each part once, while it is in the cache): Stage
  // gives room for `bytes` to be written at `at` (as Append's), Commit
  // appends what the caller put there. A call other than Commit in between
  // drops them: nothing was appended.
  absl::StatusOr<char*> Stage(uint64_t at, size_t bytes);
  absl::Status Commit();
  // Writes what is held back, cuts the file to end() and syncs its data.
  absl::Status Sync();

 private:
  absl::Status DoAppend(uint64_t at,
                        absl::Span<const absl::string_view> pieces);
  // Room for `bytes` at `at` after what buf_ holds back (the background
  // write landed).
  absl::StatusOr<char*> DoStage(uint64_t at, size_t bytes);
  // Appends the `bytes` DoStage just gave room for.
  absl::Status DoCommit(size_t bytes);
  // Not direct_: `bytes` were written at end_; they are appended, and the
  // kernel starts writing them back.
  void WrittenBehind(size_t bytes);
  absl::Status DoSync();
  // Waits for the background write (its error, if any); if it had to fall
  // back to ordinary writes, goes on that way.
  absl::Status Land();
  // Moves the end to `at`, reading back the partial block before it.
  absl::Status Seek(uint64_t at);
  // Writes `bytes` (whole blocks when direct_) at `at`; if the file system
  // refuses O_DIRECT, writes them the ordinary way and turns direct_ off.
  absl::Status WriteBlocks(const char* data, size_t bytes, uint64_t at);
  // O_DIRECT refused on this file: writes what buf_ holds, goes on with
  // ordinary writes.
  absl::Status FallBack();

  const int fd_;
  const std::string path_;
  bool direct_;
  uint64_t end_;
  // The partial last block: buf_[0, end_ - tail_start_) is the file at
  // [tail_start_, end_), not written yet (or not with what follows it).
  // Ordinary writes hold nothing back: tail_start_ == end_.
  AlignedBuffer buf_;
  uint64_t tail_start_;
  // buf_ holds the partial block before end_ (false until it is read back
  // after opening at an end inside a block).
  bool positioned_;
  // The file may be longer than end_ (a padded block, or an earlier end).
  bool cut_needed_;
  // Where the last Sync ended (pages before it have left the cache).
  uint64_t synced_;
  // Whole blocks being written in the background from spare_ (while
  // flight_ is pending); only Land touches them, or flight_fell_back_,
  // before it waits.
  AlignedBuffer spare_;
  bool flight_fell_back_ = false;
  absl::Status failed_;  // the first error; every later call returns it
  // Bytes a Stage call gave room for in buf_ after what it holds back
  // (from its start when not direct_), to be appended at end_ by Commit;
  // any other call forgets them.
  std::optional<size_t> staged_;
  // Last: destroyed first, waiting for the write that uses the above.
  BackgroundJob<absl::Status> flight_{"lt-disk-write"};
};

}  // namespace lienthong::storage

#endif  // LIENTHONG_STORAGE_SRC_DIRECT_FILE_H_
