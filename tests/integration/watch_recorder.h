// Integration-test helper: Client::Watch on its own thread, collecting the
// status events until the recorder goes away, and the predicates tests wait
// for.
//
//   WatchRecorder watch(client.get(), "");  // every document of the client
//   ASSERT_TRUE(watch.WaitFor(IsDelivery(id, kG22,
//                                        v1::DELIVERY_STATE_DELIVERED)));
//   EXPECT_THAT(watch.Of(id, kG22), SizeIs(3));
#ifndef LIENTHONG_TESTS_INTEGRATION_WATCH_RECORDER_H_
#define LIENTHONG_TESTS_INTEGRATION_WATCH_RECORDER_H_

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lienthong/client.h"
#include "tests/testing/async.h"

namespace lienthong::integration {

using EventPredicate = std::function<bool(const v1::StatusEvent&)>;

class WatchRecorder {
 public:
  WatchRecorder(Client* client, std::string document_id) {
    thread_ = std::thread([this, client, id = std::move(document_id)] {
      absl::Status s = client->Watch(
          id, 0, [this](const v1::StatusEvent& e) { events.Add(e); }, stop_);
      absl::MutexLock lock(&mu_);
      status_ = s;
    });
  }
  ~WatchRecorder() {
    stop_ = true;
    thread_.join();
  }
  WatchRecorder(const WatchRecorder&) = delete;
  WatchRecorder& operator=(const WatchRecorder&) = delete;

  // Waits (at most `timeout`) until an event matching `pred` has arrived.
  bool WaitFor(const EventPredicate& pred,
               absl::Duration timeout = absl::Seconds(20)) {
    return testing_util::Eventually(
        [&] {
          for (const v1::StatusEvent& e : events.items()) {
            if (pred(e)) return true;
          }
          return false;
        },
        timeout);
  }
  // The events of one copy, in arrival order.
  std::vector<v1::StatusEvent> Of(const std::string& id,
                                  const std::string& recipient) const {
    std::vector<v1::StatusEvent> out;
    for (const v1::StatusEvent& e : events.items()) {
      if (e.document_id() == id && e.recipient() == recipient) out.push_back(e);
    }
    return out;
  }
  // How the watch ended (OK while it runs).
  absl::Status status() {
    absl::MutexLock lock(&mu_);
    return status_;
  }

  testing_util::Collector<v1::StatusEvent> events;

 private:
  std::atomic<bool> stop_{false};
  absl::Mutex mu_;
  absl::Status status_;
  std::thread thread_;
};

inline EventPredicate IsDelivery(const std::string& id,
                                 const std::string& recipient,
                                 v1::DeliveryState state) {
  return [=](const v1::StatusEvent& e) {
    return e.document_id() == id && e.recipient() == recipient &&
           e.delivery_state() == state;
  };
}
inline EventPredicate IsBusiness(const std::string& id,
                                 const std::string& recipient,
                                 v1::BusinessStatus status) {
  return [=](const v1::StatusEvent& e) {
    return e.document_id() == id && e.recipient() == recipient &&
           e.business_status() == status;
  };
}

}  // namespace lienthong::integration

#endif  // LIENTHONG_TESTS_INTEGRATION_WATCH_RECORDER_H_
