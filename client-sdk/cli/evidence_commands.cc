#include "client-sdk/cli/evidence_commands.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client-sdk/cli/format.h"
#include "google/protobuf/util/json_util.h"
#include "lienthong/common/identity.h"
#include "lienthong/common/status_macros.h"
#include "lienthong/signing/signing.h"

namespace lienthong::cli {
namespace {

absl::Status WroteEvidence(const v1::EvidenceExport& exported,
                           const std::string& out, const OutputFlags& output) {
  v1::Evidence e;
  if (!e.ParseFromString(exported.evidence())) {
    return absl::DataLossError("the broker's evidence is malformed");
  }
  RETURN_IF_ERROR(WriteJsonFile(exported, out, "--out"));
  if (output.json) {
    std::cout << "{\"file\":" << JsonString(out)
              << ",\"document_id\":" << JsonString(e.document_id())
              << ",\"events\":" << e.history_size()
              << ",\"audit_entries\":" << e.audit_entries_size() << "}"
              << std::endl;
  } else {
    std::cout << "wrote the evidence of " << e.document_id() << " ("
              << e.history_size() << " status events, "
              << e.audit_entries_size() << " audit entries), signed by "
              << e.broker() << ", to " << out
              << "; check it with: lienthong verify " << out << " --ca CA"
              << std::endl;
  }
  return absl::OkStatus();
}

// The trust domain a signed statement claims, from a broker's SPIFFE id.
absl::StatusOr<std::string> TrustDomainOf(absl::string_view broker) {
  absl::StatusOr<Principal> p = ParseSpiffeId(broker);
  if (!p.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the file names no broker: ", p.status().message()));
  }
  return p->trust_domain;
}

absl::StatusOr<std::unique_ptr<signing::SignatureVerifier>> VerifierFor(
    const std::string& ca_file, absl::string_view broker) {
  ASSIGN_OR_RETURN(std::string ca, ReadFileFor(ca_file, "--ca"));
  ASSIGN_OR_RETURN(std::string trust_domain, TrustDomainOf(broker));
  signing::VerifierOptions options;
  options.trust_root_pem = std::move(ca);
  options.trust_domain = std::move(trust_domain);
  absl::StatusOr<std::unique_ptr<signing::SignatureVerifier>> v =
      signing::SignatureVerifier::Create(std::move(options));
  if (!v.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--ca: ", v.status().message()));
  }
  return v;
}

absl::Status Print(const std::string& file, const std::string& what,
                   const std::vector<std::string>& checked,
                   const std::vector<std::string>& problems,
                   const std::vector<std::string>& summary,
                   const OutputFlags& output) {
  const bool ok = problems.empty();
  if (output.json) {
    auto list = [](const std::vector<std::string>& items) {
      std::vector<std::string> quoted;
      for (const std::string& i : items) quoted.push_back(JsonString(i));
      return absl::StrCat("[", absl::StrJoin(quoted, ","), "]");
    };
    std::cout << "{\"file\":" << JsonString(file)
              << ",\"kind\":" << JsonString(what)
              << ",\"ok\":" << (ok ? "true" : "false")
              << ",\"checked\":" << list(checked)
              << ",\"problems\":" << list(problems) << "}" << std::endl;
  } else {
    std::cout << file << ": " << what << ": "
              << (ok ? "VERIFIED" : "DOES NOT VERIFY") << "\n";
    for (const std::string& p : problems) std::cout << "  ✗ " << p << "\n";
    for (const std::string& c : checked) std::cout << "  ✓ " << c << "\n";
    for (const std::string& s : summary) std::cout << "  " << s << "\n";
    std::cout << std::flush;
  }
  if (ok) return absl::OkStatus();
  return absl::DataLossError(
      absl::StrCat(file, " does not verify: ", problems.front()));
}

absl::Status VerifyEvidenceFile(const std::string& file,
                                const v1::EvidenceExport& exported,
                                const std::string& ca_file,
                                const OutputFlags& output) {
  v1::Evidence claimed;
  if (!claimed.ParseFromString(exported.evidence())) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": the evidence inside is malformed"));
  }
  ASSIGN_OR_RETURN(auto verifier, VerifierFor(ca_file, claimed.broker()));
  ASSIGN_OR_RETURN(signing::EvidenceReport report,
                   signing::VerifyEvidence(*verifier, exported));
  const v1::Evidence& e = report.evidence;
  std::vector<std::string> summary = {
      absl::StrCat("document ", e.document_id(), " from ",
                   e.manifest().sender(), " to ",
                   absl::StrJoin(e.manifest().recipients(), ", ")),
      absl::StrCat("subject: ", e.manifest().metadata().subject()),
      absl::StrCat("content sha256: ", e.content_sha256(),
                   e.manifest().sealed_sha256().empty()
                       ? ""
                       : " (end-to-end encrypted)")};
  for (const v1::StatusEvent& ev : e.history()) {
    summary.push_back(absl::StrCat(
        FormatTimestamp(ev.at()), "  ", ev.recipient(), "  ", EventName(ev),
        ev.reason().empty() ? "" : "  ", ev.reason()));
  }
  return Print(file, "evidence", report.checked, report.problems, summary,
               output);
}

absl::Status VerifyReceiptFile(const std::string& file,
                               const v1::CustodyReceipt& receipt,
                               const std::string& ca_file,
                               const OutputFlags& output) {
  ASSIGN_OR_RETURN(auto verifier, VerifierFor(ca_file, receipt.broker()));
  absl::StatusOr<signing::Signatory> who =
      signing::VerifyReceipt(*verifier, receipt);
  std::vector<std::string> checked, problems;
  if (who.ok()) {
    checked.push_back(absl::StrCat(
        "custody receipt signed by ", who->principal.spiffe_id, " at ",
        absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", who->signed_at,
                         absl::UTCTimeZone())));
  } else {
    problems.push_back(std::string(who.status().message()));
  }
  std::vector<std::string> summary = {
      absl::StrCat("document ", receipt.document_id(), " (sha256 ",
                   receipt.document_sha256(), ") from ", receipt.sender(),
                   " to ", absl::StrJoin(receipt.recipients(), ", ")),
      absl::StrCat("in the custody of ", receipt.broker(), " since ",
                   FormatTimestamp(receipt.accepted_at()))};
  return Print(file, "custody receipt", checked, problems, summary, output);
}

}  // namespace

absl::Status WriteJsonFile(const google::protobuf::Message& message,
                           const std::string& path, absl::string_view flag) {
  if (path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": required"));
  }
  std::string json;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(message, &json, o).ok()) {
    return absl::InternalError("cannot write JSON");
  }
  if (absl::Status s = WriteFileDurably(path, json); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": cannot write ", path, " (", s.message(), ")"));
  }
  return absl::OkStatus();
}

absl::Status RunEvidence(Client& client, const std::string& document_id,
                         const std::string& out, const OutputFlags& output) {
  if (out.empty()) return absl::InvalidArgumentError("--out: required");
  ASSIGN_OR_RETURN(v1::EvidenceExport exported,
                   client.GetEvidence(document_id));
  return WroteEvidence(exported, out, output);
}

absl::Status RunAdminEvidence(AdminClient& admin,
                              const std::string& document_id,
                              const std::string& out,
                              const OutputFlags& output) {
  if (out.empty()) return absl::InvalidArgumentError("--out: required");
  ASSIGN_OR_RETURN(v1::EvidenceExport exported,
                   admin.ExportEvidence(document_id));
  return WroteEvidence(exported, out, output);
}

absl::Status RunVerify(const std::string& file, const std::string& ca_file,
                       const OutputFlags& output) {
  if (ca_file.empty()) return absl::InvalidArgumentError("--ca: required");
  ASSIGN_OR_RETURN(std::string json, ReadFileFor(file, "FILE"));
  v1::EvidenceExport exported;
  if (google::protobuf::util::JsonStringToMessage(json, &exported).ok() &&
      !exported.evidence().empty()) {
    return VerifyEvidenceFile(file, exported, ca_file, output);
  }
  v1::CustodyReceipt receipt;
  if (google::protobuf::util::JsonStringToMessage(json, &receipt).ok() &&
      !receipt.document_id().empty()) {
    return VerifyReceiptFile(file, receipt, ca_file, output);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      file,
      ": neither an evidence export (lienthong evidence) nor a custody "
      "receipt (lienthong send --receipt)"));
}

}  // namespace lienthong::cli
