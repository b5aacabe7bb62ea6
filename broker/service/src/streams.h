// Pieces the services' streaming reactors share: reference counting that
// outlives core callbacks, the registry that ends long streams at shutdown,
// and a reactor that refuses a stream with a status.
#ifndef LIENTHONG_BROKER_SERVICE_SRC_STREAMS_H_
#define LIENTHONG_BROKER_SERVICE_SRC_STREAMS_H_

#include <atomic>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "lienthong/broker/service.h"

namespace lienthong::broker {

inline grpc::Status ShuttingDown() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "broker is shutting down; reconnect");
}

// Deletes itself when gRPC is done with it (OnDone) and every core callback
// that captured it has run.
class RefCounted {
 public:
  virtual ~RefCounted() = default;
  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

 private:
  std::atomic<int> refs_{1};  // held by gRPC until OnDone
};

// Streams that stay open for hours (Receive, WatchStatus, SendStream) are
// ended with UNAVAILABLE when the broker stops, so clients reconnect at once
// and the server does not wait out its shutdown grace.
class StreamRegistry {
 public:
  class Stream {
   public:
    virtual ~Stream() = default;
    // Ends the stream soon with UNAVAILABLE. Called with the registry's lock
    // held: must not call back into the registry.
    virtual void StopForShutdown() = 0;
  };

  // False when the broker is already stopping: the stream must end at once.
  bool Add(Stream* s) {
    absl::MutexLock lock(&mu_);
    if (stopping_) return false;
    live_.insert(s);
    return true;
  }
  void Remove(Stream* s) {
    absl::MutexLock lock(&mu_);
    live_.erase(s);
  }
  void StopAll() {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (Stream* s : live_) s->StopForShutdown();
  }

 private:
  absl::Mutex mu_;
  absl::flat_hash_set<Stream*> live_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

template <typename Request, typename Response>
class RefuseBidi final : public grpc::ServerBidiReactor<Request, Response> {
 public:
  explicit RefuseBidi(const absl::Status& status) {
    this->Finish(ToGrpcStatus(status));
  }
  void OnDone() override { delete this; }
};

}  // namespace lienthong::broker

#endif  // LIENTHONG_BROKER_SERVICE_SRC_STREAMS_H_
