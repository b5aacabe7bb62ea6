// Runs one job at a time on a thread of its own that stays for the next
// job: an attachment file's write behind and its reader's read ahead start
// one job per chunk, and std::async would make and end a thread for each
// (thousands per gigabyte, each with a stack the kernel maps and clears).
//
//   BackgroundJob<absl::Status> flight("lt-disk-write");
//   if (!flight.Start([&] { return WriteBlocks(...); })) WriteBlocks(...);
//   ...
//   if (flight.pending()) RETURN_IF_ERROR(flight.Take());
//
// One owner calls Start, pending and Take; the destructor waits for a job
// still running.
#ifndef LIENTHONG_COMMON_BACKGROUND_JOB_H_
#define LIENTHONG_COMMON_BACKGROUND_JOB_H_

#include <cassert>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "lienthong/common/thread_name.h"

namespace lienthong {

template <typename T>
class BackgroundJob {
 public:
  // `name`: the thread's, as top -H and perf show it.
  explicit BackgroundJob(std::string name) : name_(std::move(name)) {}
  BackgroundJob(const BackgroundJob&) = delete;
  BackgroundJob& operator=(const BackgroundJob&) = delete;

  ~BackgroundJob() {
    {
      absl::MutexLock lock(&mu_);
      ending_ = true;
    }
    if (thread_.joinable()) thread_.join();
  }

  // A job was started and its result not taken yet.
  bool pending() const { return pending_; }

  // Starts `job` in the background; none may be pending. False, starting
  // nothing, when no thread can be made: the caller does the work itself.
  bool Start(std::function<T()> job) {
    assert(!pending_);
    if (!thread_.joinable()) {
      try {
        thread_ = std::thread([this] { Run(); });
      } catch (const std::system_error&) {
        return false;
      }
    }
    absl::MutexLock lock(&mu_);
    job_ = std::move(job);
    pending_ = true;
    return true;
  }

  // Waits for the pending job and returns what it returned (throws what it
  // threw, as std::future::get does).
  T Take() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(this, &BackgroundJob::Done));
    pending_ = false;
    if (thrown_) std::rethrow_exception(std::exchange(thrown_, nullptr));
    T out = *std::move(result_);
    result_.reset();
    return out;
  }

 private:
  void Run() {
    NameThisThread(name_);
    absl::MutexLock lock(&mu_);
    while (true) {
      mu_.Await(absl::Condition(this, &BackgroundJob::HasJobOrEnding));
      if (!job_) return;  // ending, and nothing left to run
      std::function<T()> job = std::move(job_);
      job_ = nullptr;
      mu_.Unlock();
      std::optional<T> result;
      std::exception_ptr thrown;
      try {
        result.emplace(job());
      } catch (...) {
        thrown = std::current_exception();
      }
      mu_.Lock();
      result_ = std::move(result);
      thrown_ = thrown;
    }
  }
  bool HasJobOrEnding() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return job_ != nullptr || ending_;
  }
  bool Done() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return result_.has_value() || thrown_ != nullptr;
  }

  const std::string name_;
  std::thread thread_;
  bool pending_ = false;  // the owner's: Start to Take
  absl::Mutex mu_;
  std::function<T()> job_ ABSL_GUARDED_BY(mu_);
  std::optional<T> result_ ABSL_GUARDED_BY(mu_);
  std::exception_ptr thrown_ ABSL_GUARDED_BY(mu_);
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace lienthong

#endif  // LIENTHONG_COMMON_BACKGROUND_JOB_H_
