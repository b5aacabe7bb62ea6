// Hands items from one thread to another through a queue of a few, so that
// one thread can read the network while the other hashes and stores what
// was read: an attachment transfer then takes as long as the slower of the
// two, not their sum.
//
//   Handoff<Frame> frames(2);
//   std::thread reader([&] {
//     for (Frame f; ReadFrame(&f) && frames.Put(std::move(f)); f = Frame()) {}
//     frames.Close();
//   });
//   while (std::optional<Frame> f = frames.Take()) {
//     if (!Store(*f).ok()) { frames.Stop(); break; }
//   }
//   reader.join();
//
// One producer and one consumer; every method is thread-safe.
#ifndef LIENTHONG_COMMON_HANDOFF_H_
#define LIENTHONG_COMMON_HANDOFF_H_

#include <cstddef>
#include <deque>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace lienthong {

template <typename T>
class Handoff {
 public:
  // At most `capacity` (at least 1) items wait between the two threads.
  explicit Handoff(size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}

  Handoff(const Handoff&) = delete;
  Handoff& operator=(const Handoff&) = delete;

  // Producer: waits for room, then queues `item`. False (and `item` is
  // dropped) once the consumer has stopped: the producer should stop too.
  bool Put(T item) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(this, &Handoff::HasRoomOrStopped));
    if (stopped_) return false;
    items_.push_back(std::move(item));
    return true;
  }

  // Producer: no more items (Put must not follow). Take returns those
  // queued, then nullopt.
  void Close() {
    absl::MutexLock lock(&mu_);
    closed_ = true;
  }

  // Consumer: the next item, waiting for one; nullopt once the producer has
  // closed and every item was taken, or after Stop.
  std::optional<T> Take() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(this, &Handoff::HasItemOrEnded));
    if (stopped_ || items_.empty()) return std::nullopt;
    T item = std::move(items_.front());
    items_.pop_front();
    return item;
  }

  // Consumer: takes nothing more. Queued items are dropped and a producer
  // waiting in Put (or putting later) gets false.
  void Stop() {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
    items_.clear();
  }

 private:
  bool HasRoomOrStopped() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopped_ || items_.size() < capacity_;
  }
  bool HasItemOrEnded() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopped_ || closed_ || !items_.empty();
  }

  const size_t capacity_;
  absl::Mutex mu_;
  std::deque<T> items_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace lienthong

#endif  // LIENTHONG_COMMON_HANDOFF_H_
