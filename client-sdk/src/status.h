// Translation of gRPC statuses into absl::Status, and the retry classes the
// SDK derives from them. Internal to the SDK. All functions are pure and
// thread-safe.
#ifndef LIENTHONG_CLIENT_SDK_SRC_STATUS_H_
#define LIENTHONG_CLIENT_SDK_SRC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "google/protobuf/timestamp.pb.h"
#include "lienthong/v1/exchange.pb.h"

namespace lienthong::client_internal {

// The one translation of a gRPC status: same code, same message.
absl::Status FromGrpcStatus(const grpc::Status& status);

// A status carried inside a stream message, through FromGrpcStatus. A code
// outside the gRPC range, or OK inside an Error, becomes UNKNOWN.
absl::Status FromWireError(const v1::Error& error);

// Which failures of a unary call are retried with the same request.
enum class RetryOn {
  // Only UNAVAILABLE: the request was certainly not processed (calls that
  // are not idempotent at the broker, e.g. ReportStatus).
  kUnavailable,
  // UNAVAILABLE and DEADLINE_EXCEEDED: the request may have been processed,
  // which is harmless because repeating it has the same effect (Send with
  // its idempotency key, reads, acks).
  kUnavailableOrDeadline,
};
bool IsRetryable(grpc::StatusCode code, RetryOn retry_on);

// True for the codes that end a long-lived stream (Receive, Watch) instead
// of making it reconnect: the broker refused the caller or the request, and
// asking again cannot change its answer.
bool EndsLongLivedStream(grpc::StatusCode code);

absl::Time FromTimestamp(const google::protobuf::Timestamp& timestamp);

}  // namespace lienthong::client_internal

#endif  // LIENTHONG_CLIENT_SDK_SRC_STATUS_H_
