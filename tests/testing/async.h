// Turning asynchronous callbacks into bounded blocking waits, so a test fails
// instead of hanging when a callback never comes.
//
//   AsyncResult<v1::SendResponse> sent;
//   exchange->Send(caller, doc, sent.Callback());
//   ASSERT_OK_AND_ASSIGN(v1::SendResponse response, sent.Wait());
//
//   Collector<v1::Delivery> got;           // filled from a sink
//   ... sink = [&got](v1::ReceiveResponse r) { for (auto& d : r.deliveries())
//   got.Add(d); }; ASSERT_TRUE(got.WaitForCount(3));
//
// State is shared with the callbacks, so a callback arriving after a timed-out
// wait (or after the waiting object is gone) is harmless.
#ifndef LIENTHONG_TESTS_TESTING_ASYNC_H_
#define LIENTHONG_TESTS_TESTING_ASYNC_H_

#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace lienthong::testing_util {

// How long any test waits for something that should happen promptly.
inline constexpr absl::Duration kAsyncTimeout = absl::Seconds(10);

// The outcome of one callback taking absl::StatusOr<T>.
template <typename T>
class AsyncResult {
 public:
  AsyncResult() : state_(std::make_shared<State>()) {}

  // The callback to hand to the asynchronous call. Counts every call; only
  // the first one's value is kept.
  absl::AnyInvocable<void(absl::StatusOr<T>)> Callback() {
    return [state = state_](absl::StatusOr<T> result) {
      absl::MutexLock lock(&state->mu);
      if (state->calls++ > 0) return;
      state->value = std::move(result);
      state->done.Notify();
    };
  }

  // The first callback's value, or DEADLINE_EXCEEDED if none came within
  // `timeout`.
  absl::StatusOr<T> Wait(absl::Duration timeout = kAsyncTimeout) {
    if (!state_->done.WaitForNotificationWithTimeout(timeout)) {
      return absl::DeadlineExceededError("the callback did not run in time");
    }
    absl::MutexLock lock(&state_->mu);
    return state_->value;
  }

  // How often the callback ran so far (a callback must run exactly once).
  int calls() const {
    absl::MutexLock lock(&state_->mu);
    return state_->calls;
  }

 private:
  struct State {
    mutable absl::Mutex mu;
    int calls ABSL_GUARDED_BY(mu) = 0;
    absl::StatusOr<T> value ABSL_GUARDED_BY(mu) = absl::UnknownError("not set");
    absl::Notification done;
  };
  std::shared_ptr<State> state_;
};

// Items arriving from another thread, in arrival order. Thread-safe; copies
// share the same items.
template <typename T>
class Collector {
 public:
  Collector() : state_(std::make_shared<State>()) {}

  void Add(T item) const {
    absl::MutexLock lock(&state_->mu);
    state_->items.push_back(std::move(item));
    state_->changed.SignalAll();
  }

  // True once at least `n` items have arrived; false after `timeout`.
  bool WaitForCount(size_t n, absl::Duration timeout = kAsyncTimeout) const {
    absl::Time deadline = absl::Now() + timeout;
    absl::MutexLock lock(&state_->mu);
    while (state_->items.size() < n) {
      if (state_->changed.WaitWithDeadline(&state_->mu, deadline)) {
        return state_->items.size() >= n;
      }
    }
    return true;
  }

  // The item count after `quiet` more time, to check that nothing else
  // arrives. The only real-time sleep tests need: absence has no event.
  size_t CountAfter(absl::Duration quiet = absl::Milliseconds(200)) const {
    absl::SleepFor(quiet);
    return size();
  }

  size_t size() const {
    absl::MutexLock lock(&state_->mu);
    return state_->items.size();
  }

  std::vector<T> items() const {
    absl::MutexLock lock(&state_->mu);
    return state_->items;
  }

 private:
  struct State {
    absl::Mutex mu;
    absl::CondVar changed;
    std::vector<T> items ABSL_GUARDED_BY(mu);
  };
  std::shared_ptr<State> state_;
};

// Polls `condition` until it holds or `timeout` passes, for effects that
// complete asynchronously without a callback. Returns whether it held.
inline bool Eventually(absl::FunctionRef<bool()> condition,
                       absl::Duration timeout = kAsyncTimeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

}  // namespace lienthong::testing_util

#endif  // LIENTHONG_TESTS_TESTING_ASYNC_H_
