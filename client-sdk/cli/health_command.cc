#include "client-sdk/cli/health_command.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>

#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client-sdk/cli/format.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "lienthong/common/certificate.h"
#include "lienthong/common/status_macros.h"
#include "lienthong/v1/incidents.grpc.pb.h"

namespace lienthong::cli {
namespace {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

absl::StatusOr<std::string> ReadPem(const std::string& flag,
                                    const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  if (in) text << in.rdbuf();
  if (!in || text.str().empty()) {
    return absl::NotFoundError(
        absl::StrCat(flag, " ", path, ": cannot read the file"));
  }
  return text.str();
}

// The credentials of `target`: its certificate (any Liên Thông identity, not
// expired), key and trust root, read once.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> Credentials(
    const HealthTarget& target) {
  ASSIGN_OR_RETURN(CertificateInfo info,
                   ReadCertificateFile(target.certificate_file));
  if (info.not_after < absl::Now()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--cert ", target.certificate_file, ": certificate expired at ",
        absl::FormatTime(info.not_after, absl::UTCTimeZone())));
  }
  RETURN_IF_ERROR(CheckPrivateKeyFile(target.private_key_file));
  ASSIGN_OR_RETURN(std::string certificate,
                   ReadPem("--cert", target.certificate_file));
  ASSIGN_OR_RETURN(std::string key, ReadPem("--key", target.private_key_file));
  ASSIGN_OR_RETURN(std::string ca, ReadPem("--ca", target.ca_file));
  if (!target.crl_directory.empty()) {
    absl::StatusOr<CrlDirectoryInfo> crls =
        CheckCrlDirectory(target.crl_directory, target.ca_file);
    if (!crls.ok()) {
      return absl::Status(crls.status().code(),
                          absl::StrCat("--crl-dir ", crls.status().message()));
    }
    ASSIGN_OR_RETURN(std::string revoked,
                     FindRevocation(target.crl_directory, target.ca_file,
                                    target.certificate_file));
    if (!revoked.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--cert ", target.certificate_file, ": ", revoked));
    }
  }

  auto provider =
      std::make_shared<grpc::experimental::StaticDataCertificateProvider>(
          ca, std::vector<grpc::experimental::IdentityKeyCertPair>{
                  {std::move(key), std::move(certificate)}});
  grpc::experimental::TlsChannelCredentialsOptions tls;
  tls.set_certificate_provider(provider);
  tls.watch_root_certs();
  tls.watch_identity_key_cert_pairs();
  tls.set_verify_server_certs(true);
  tls.set_certificate_verifier(
      std::make_shared<grpc::experimental::HostNameCertificateVerifier>());
  tls.set_check_call_host(true);
  if (!target.crl_directory.empty())
    tls.set_crl_directory(target.crl_directory);
  return grpc::experimental::TlsCredentials(tls);
}

}  // namespace

CLI::App* AddHealthCommand(CLI::App& app, HealthFlags& flags) {
  CLI::App* cmd = app.add_subcommand(
      "health",
      "Ask one broker whether it serves (grpc.health.v1 Check); exit 0 only "
      "when SERVING");
  cmd->add_option("--service", flags.service,
                  "Service to ask about (default \"\": the broker; also "
                  "lienthong.v1.ExchangeService, lienthong.v1.AdminService)");
  cmd->add_option("--server-name", flags.server_name,
                  "Name to check the broker's certificate against (default: "
                  "the endpoint's host)");
  cmd->footer(
      "Any certificate of the broker's CA will do (organization, person or\n"
      "broker). One attempt, no retries, within --timeout (default 10 s).\n"
      "Exit 0 SERVING; 3 NOT_SERVING (stopping) or refused (unknown service,\n"
      "UNAUTHENTICATED); 4 no answer (UNAVAILABLE, DEADLINE_EXCEEDED; a TLS\n"
      "handshake the broker rejects shows as UNAVAILABLE); 2 usage.");
  return cmd;
}

absl::Status RunHealth(const HealthTarget& target, const HealthFlags& flags,
                       const OutputFlags& output) {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      Credentials(target);
  if (!credentials.ok()) return UsageError(credentials.status());
  grpc::ChannelArguments args;
  if (!flags.server_name.empty()) {
    args.SetSslTargetNameOverride(flags.server_name);
  }
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(target.endpoint, *credentials, args);
  std::unique_ptr<grpc::health::v1::Health::Stub> stub =
      grpc::health::v1::Health::NewStub(channel);

  HealthCheckRequest request;
  request.set_service(flags.service);
  HealthCheckResponse response;
  grpc::ClientContext context;
  // Fail fast: a refused connection is reported at once, not retried until
  // the deadline.
  context.set_deadline(absl::ToChronoTime(absl::Now() + target.timeout));
  grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) {
    // gRPC and Abseil share the canonical code numbering.
    return absl::Status(
        static_cast<absl::StatusCode>(status.error_code()),
        absl::StrCat(target.endpoint, ": ", status.error_message()));
  }
  const std::string name =
      HealthCheckResponse::ServingStatus_Name(response.status());
  // Open incidents the caller may see (an organization: those affecting
  // it; operators and auditors: all). Best effort: a caller that may not
  // list them (a broker certificate) sees the serving status only.
  v1::ListIncidentsResponse incidents;
  if (response.status() == HealthCheckResponse::SERVING) {
    v1::ListIncidentsRequest open;
    open.set_open_only(true);
    grpc::ClientContext list_context;
    list_context.set_deadline(absl::ToChronoTime(absl::Now() + target.timeout));
    if (!v1::IncidentService::NewStub(channel)
             ->ListIncidents(&list_context, open, &incidents)
             .ok()) {
      incidents.Clear();
    }
  }
  if (output.json) {
    std::cout << "{\"endpoint\":" << JsonString(target.endpoint)
              << ",\"service\":" << JsonString(flags.service)
              << ",\"status\":" << JsonString(name);
    if (!incidents.incidents().empty()) {
      std::cout << ",\"open_incidents\":" << ToJson(incidents);
    }
    std::cout << "}" << std::endl;
  } else {
    std::cout << name << std::endl;
    for (const v1::Incident& i : incidents.incidents()) {
      std::cout << "open incident " << i.id() << " ("
                << v1::IncidentSeverity_Name(i.severity()) << ", declared at "
                << i.broker() << " " << FormatTimestamp(i.declared_at())
                << "): " << i.description() << std::endl;
    }
  }
  if (response.status() != HealthCheckResponse::SERVING) {
    return absl::FailedPreconditionError(absl::StrCat(
        target.endpoint, ": ",
        flags.service.empty() ? "the broker" : flags.service, " is ", name));
  }
  return absl::OkStatus();
}

}  // namespace lienthong::cli
