// Threads the core owns for blocking work (RocksDB reads, hashing) and for
// timers, so that gRPC's callback threads never block.
#ifndef LIENTHONG_BROKER_EXECUTOR_H_
#define LIENTHONG_BROKER_EXECUTOR_H_

#include <deque>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace lienthong::broker {

// A fixed pool of threads running tasks in submission order. Thread-safe.
// The destructor runs every task already submitted, then joins.
class WorkerPool {
 public:
  explicit WorkerPool(int threads);
  ~WorkerPool();
  void Submit(absl::AnyInvocable<void()> task);
  // True when no task is queued or running.
  bool Idle();
  // Blocks until Idle().
  void WaitIdle();

 private:
  void Loop();
  absl::Mutex mu_;
  std::deque<absl::AnyInvocable<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

// Runs its tasks one at a time, in submission order, on a WorkerPool.
// Thread-safe; the pool must outlive every task submitted.
class Strand {
 public:
  explicit Strand(WorkerPool* pool) : state_(std::make_shared<State>()) {
    state_->pool = pool;
  }
  void Submit(absl::AnyInvocable<void()> task);

 private:
  struct State {
    WorkerPool* pool = nullptr;
    absl::Mutex mu;
    std::deque<absl::AnyInvocable<void()>> tasks ABSL_GUARDED_BY(mu);
    bool running ABSL_GUARDED_BY(mu) = false;
  };
  static void Drain(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

// Runs tasks at a time on one thread. Tasks must be short (hand blocking work
// to a WorkerPool). Thread-safe. Tasks still pending at destruction are
// dropped.
class Timer {
 public:
  Timer();
  ~Timer();
  void RunAt(absl::Time when, absl::AnyInvocable<void()> task);
  void RunAfter(absl::Duration d, absl::AnyInvocable<void()> task) {
    RunAt(absl::Now() + d, std::move(task));
  }

 private:
  void Loop();
  absl::Mutex mu_;
  std::multimap<absl::Time, absl::AnyInvocable<void()>> tasks_
      ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace lienthong::broker

#endif  // LIENTHONG_BROKER_EXECUTOR_H_
