#include "lienthong/broker/service.h"

namespace lienthong::broker {
namespace {

using grpc::health::v1::HealthCheckResponse;

bool Known(const std::string& service) {
  return service.empty() || service == "lienthong.v1.ExchangeService" ||
         service == "lienthong.v1.AdminService";
}

// Sends the status once and keeps the stream open until the client leaves or
// the server stops.
class HealthWatch : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  HealthWatch(HealthCheckResponse::ServingStatus status) {
    response_.set_status(status);
    StartWrite(&response_);
  }
  void OnWriteDone(bool ok) override {
    if (!ok) Finish(grpc::Status::CANCELLED);
  }
  void OnCancel() override { Finish(grpc::Status::CANCELLED); }
  void OnDone() override { delete this; }

 private:
  HealthCheckResponse response_;
};

}  // namespace

grpc::ServerUnaryReactor* HealthServiceImpl::Check(
    grpc::CallbackServerContext* ctx,
    const grpc::health::v1::HealthCheckRequest* request,
    HealthCheckResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  if (!Known(request->service())) {
    reactor->Finish(
        grpc::Status(grpc::StatusCode::NOT_FOUND,
                     "unknown service \"" + request->service() + "\""));
    return reactor;
  }
  response->set_status(serving_ ? HealthCheckResponse::SERVING
                                : HealthCheckResponse::NOT_SERVING);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthServiceImpl::Watch(
    grpc::CallbackServerContext* ctx,
    const grpc::health::v1::HealthCheckRequest* request) {
  HealthCheckResponse::ServingStatus status =
      !Known(request->service()) ? HealthCheckResponse::SERVICE_UNKNOWN
      : serving_                 ? HealthCheckResponse::SERVING
                                 : HealthCheckResponse::NOT_SERVING;
  return new HealthWatch(status);
}

}  // namespace lienthong::broker
