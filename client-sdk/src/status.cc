#include "client-sdk/src/status.h"

namespace lienthong::client_internal {

absl::Status FromGrpcStatus(const grpc::Status& status) {
  // gRPC and Abseil share the canonical code numbering.
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

absl::Status FromWireError(const v1::Error& error) {
  int code = error.code();
  if (code <= 0 || code > static_cast<int>(grpc::StatusCode::UNAUTHENTICATED)) {
    code = static_cast<int>(grpc::StatusCode::UNKNOWN);
  }
  return FromGrpcStatus(
      grpc::Status(static_cast<grpc::StatusCode>(code), error.message()));
}

bool IsRetryable(grpc::StatusCode code, RetryOn retry_on) {
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE:
      return true;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return retry_on == RetryOn::kUnavailableOrDeadline;
    default:
      return false;
  }
}

bool EndsLongLivedStream(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::UNIMPLEMENTED:
    case grpc::StatusCode::UNAUTHENTICATED:
      return true;
    default:
      return false;
  }
}

absl::Time FromTimestamp(const google::protobuf::Timestamp& timestamp) {
  return absl::FromUnixSeconds(timestamp.seconds()) +
         absl::Nanoseconds(timestamp.nanos());
}

}  // namespace lienthong::client_internal
