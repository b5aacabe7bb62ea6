#include "lienthong/broker/executor.h"

#include "lienthong/common/thread_name.h"

namespace lienthong::broker {

WorkerPool::WorkerPool(int threads) {
  for (int i = 0; i < threads; ++i)
    threads_.emplace_back([this] {
      NameThisThread("lt-worker");
      Loop();
    });
}

WorkerPool::~WorkerPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (auto& t : threads_) t.join();
}

void WorkerPool::Submit(absl::AnyInvocable<void()> task) {
  absl::MutexLock lock(&mu_);
  tasks_.push_back(std::move(task));
}

void WorkerPool::Loop() {
  for (;;) {
    absl::AnyInvocable<void()> task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](WorkerPool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
            return !p->tasks_.empty() || p->stopping_;
          },
          this));
      if (tasks_.empty()) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
      ++running_;
    }
    task();
    task = nullptr;
    absl::MutexLock lock(&mu_);
    --running_;
  }
}

bool WorkerPool::Idle() {
  absl::MutexLock lock(&mu_);
  return tasks_.empty() && running_ == 0;
}

void WorkerPool::WaitIdle() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](WorkerPool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
        return p->tasks_.empty() && p->running_ == 0;
      },
      this));
}

void Strand::Submit(absl::AnyInvocable<void()> task) {
  bool start;
  {
    absl::MutexLock lock(&state_->mu);
    state_->tasks.push_back(std::move(task));
    start = !state_->running;
    state_->running = true;
  }
  if (start) state_->pool->Submit([state = state_] { Drain(state); });
}

void Strand::Drain(std::shared_ptr<State> state) {
  for (;;) {
    absl::AnyInvocable<void()> task;
    {
      absl::MutexLock lock(&state->mu);
      if (state->tasks.empty()) {
        state->running = false;
        return;
      }
      task = std::move(state->tasks.front());
      state->tasks.pop_front();
    }
    task();
  }
}

Timer::Timer() {
  thread_ = std::thread([this] {
    NameThisThread("lt-timer");
    Loop();
  });
}

Timer::~Timer() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void Timer::RunAt(absl::Time when, absl::AnyInvocable<void()> task) {
  absl::MutexLock lock(&mu_);
  tasks_.emplace(when, std::move(task));
}

void Timer::Loop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    if (tasks_.empty()) {
      mu_.AwaitWithTimeout(
          absl::Condition(
              +[](Timer* t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(t->mu_) {
                return !t->tasks_.empty() || t->stopping_;
              },
              this),
          absl::Seconds(1));
      continue;
    }
    absl::Time next = tasks_.begin()->first;
    absl::Time now = absl::Now();
    if (next > now) {
      // Wake early when an earlier task or stop arrives.
      size_t size = tasks_.size();
      struct Args {
        Timer* t;
        size_t size;
      } args{this, size};
      mu_.AwaitWithDeadline(absl::Condition(
                                +[](Args* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                                  return a->t->stopping_ ||
                                         a->t->tasks_.size() != a->size;
                                },
                                &args),
                            next);
      continue;
    }
    auto task = std::move(tasks_.begin()->second);
    tasks_.erase(tasks_.begin());
    mu_.Unlock();
    task();
    mu_.Lock();
  }
}

}  // namespace lienthong::broker
