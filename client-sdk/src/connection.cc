#include "client-sdk/src/connection.h"

#include <grpc/support/log.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>

#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client-sdk/src/backoff.h"
#include "client-sdk/src/client_attachments.h"
#include "client-sdk/src/credentials.h"
#include "lienthong/common/certificate.h"
#include "lienthong/common/ids.h"
#include "lienthong/common/sealing.h"
#include "lienthong/common/status_macros.h"

namespace lienthong::client_internal {
namespace {

// The most documents one shared signature covers (its Merkle audit paths
// grow with the log of this).
constexpr size_t kMaxSharedBatch = 4096;

std::shared_ptr<grpc::Channel> MakeChannel(
    const std::string& address, const ClientOptions& options,
    const std::shared_ptr<grpc::experimental::CertificateProviderInterface>&
        certificates) {
  grpc::experimental::TlsChannelCredentialsOptions tls;
  tls.set_certificate_provider(certificates);
  tls.watch_root_certs();
  tls.watch_identity_key_cert_pairs();
  tls.set_verify_server_certs(true);
  // The broker's certificate must name the host we dialled (or
  // server_name_override).
  tls.set_certificate_verifier(
      std::make_shared<grpc::experimental::HostNameCertificateVerifier>());
  tls.set_check_call_host(true);
  if (!options.crl_directory.empty())
    tls.set_crl_directory(options.crl_directory);

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxReceiveMessageBytes);
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, kStreamWindowBytes);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveTimeMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kMaxReconnectBackoffMs);
  if (!options.server_name_override.empty()) {
    args.SetSslTargetNameOverride(options.server_name_override);
  }
  return grpc::CreateCustomChannel(
      address, grpc::experimental::TlsCredentials(tls), args);
}

}  // namespace

Connection::Connection(ClientOptions options, Principal identity,
                       std::unique_ptr<DedupSet> dedup,
                       std::unique_ptr<Sealer> sealer,
                       std::unique_ptr<signing::Signer> signer,
                       std::unique_ptr<signing::SignatureVerifier> verifier)
    : options_(std::move(options)),
      identity_(std::move(identity)),
      dedup_(std::move(dedup)),
      sealer_(std::move(sealer)),
      signer_(std::move(signer)),
      verifier_(std::move(verifier)),
      batcher_(signer_ ? std::make_unique<signing::BatchSigner>(
                             [this](const std::vector<std::string>& digests) {
                               return signer_->SignBatch(digests, absl::Now());
                             },
                             options_.signature_batch_interval, kMaxSharedBatch)
                       : nullptr) {}

void Connection::SignShared(const void* owner, std::string digest,
                            signing::BatchSigner::Done done) const {
  if (!batcher_) {
    done(absl::FailedPreconditionError(
             "only an organization's client signs documents"),
         /*last=*/true);
    return;
  }
  batcher_->Sign(owner, std::move(digest), std::move(done));
}

absl::Status Connection::SignBatch(
    const std::vector<v1::Document*>& documents,
    const std::vector<std::string>& digests) const {
  if (documents.empty()) return absl::OkStatus();
  if (!signer_) {
    return absl::FailedPreconditionError(
        "only an organization's client signs documents");
  }
  absl::StatusOr<std::vector<v1::Signature>> signatures =
      signer_->SignBatch(digests, absl::Now());
  if (!signatures.ok()) return signatures.status();
  for (size_t i = 0; i < documents.size(); ++i)
    *documents[i]->mutable_signature() = std::move((*signatures)[i]);
  return absl::OkStatus();
}

absl::StatusOr<SendReceipt> Connection::Receipt(
    const v1::SendResponse& response, const std::string& idempotency_key,
    bool sealed, absl::string_view digest, absl::string_view signature) const {
  const v1::CustodyReceipt& r = response.receipt();
  auto refuse = [&](absl::string_view why) {
    return absl::UnauthenticatedError(
        absl::StrCat("the broker's custody receipt for document ",
                     response.document_id(), " ", why,
                     "; the document may be stored: a resend with idempotency "
                     "key \"",
                     idempotency_key, "\" is safe"));
  };
  if (!response.has_receipt()) return refuse("is missing");
  absl::StatusOr<signing::Signatory> who =
      signing::VerifyReceipt(*verifier_, r);
  if (!who.ok()) {
    return refuse(absl::StrCat("does not verify: ", who.status().message()));
  }
  if (r.document_id() != response.document_id() || r.sender() != org() ||
      r.idempotency_key() != idempotency_key) {
    return refuse("is about another document");
  }
  // A duplicate's receipt is that of the copy stored first, which may have
  // been sealed or signed differently.
  if (!response.duplicate() &&
      (r.document_sha256() != sealing::HexOf(digest) ||
       r.sender_signature_sha256() !=
           sealing::HexOf(signing::Sha256(signature)))) {
    return refuse("names other content or another signature than was sent");
  }
  SendReceipt receipt;
  receipt.sealed = sealed;
  receipt.document_id = response.document_id();
  receipt.idempotency_key = idempotency_key;
  receipt.duplicate = response.duplicate();
  receipt.accepted_at = FromTimestamp(response.accepted_at());
  receipt.content_sha256 = response.content_sha256();
  receipt.custody_receipt = r;
  return receipt;
}

absl::Status Connection::SealIfNeeded(v1::Document* document) const {
  const bool must_seal = sealer_->MustSeal(*document);
  for (int i = 0; i < document->attachments_size(); ++i) {
    const v1::Attachment& a = document->attachments(i);
    if (a.has_sealing()) {
      if (!must_seal) {
        // The key would travel in plaintext, or not at all.
        return absl::FailedPreconditionError(absl::StrCat(
            "document.attachments[", i, "]: \"", a.name(),
            "\" was uploaded sealed end to end (UploadOptions::seal), and "
            "this document is not sealed: its recipients could not read the "
            "attachment, whose key travels only inside sealed content. Send "
            "it in a confidential or secret document (or with "
            "ClientOptions::seal_all), or upload it again without sealing"));
      }
      if (absl::Status s = ValidateSealing(a); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("document.attachments[", i,
                                                   "]: ", s.message()));
      }
    } else if (must_seal && a.stored()) {
      // Its plaintext went to the broker: sealing the document now would
      // promise a confidentiality the attachment never had.
      return absl::FailedPreconditionError(absl::StrCat(
          "document.attachments[", i, "]: \"", a.name(),
          "\" was uploaded in plaintext, and this document must be sealed "
          "end to end: upload it again with UploadOptions::seal "
          "(Client::UploadAttachment), so that only its ciphertext reaches "
          "the broker"));
    }
  }
  if (!must_seal) return absl::OkStatus();
  return sealer_->Seal(
      document,
      [this](const std::vector<std::string>& orgs)
          -> absl::StatusOr<v1::GetEncryptionCertificatesResponse> {
        v1::GetEncryptionCertificatesRequest request;
        for (const std::string& org : orgs) request.add_orgs(org);
        v1::GetEncryptionCertificatesResponse response;
        absl::Status status =
            Call(RetryOn::kUnavailableOrDeadline, absl::ZeroDuration(),
                 [&](Stub& stub, grpc::ClientContext& context) {
                   response.Clear();
                   return stub.GetEncryptionCertificates(&context, request,
                                                         &response);
                 });
        if (!status.ok()) return status;
        return response;
      });
}

namespace {

// A verification or opening error that says nothing about the document:
// this machine could not check it now (a CRL missing or stale, OpenSSL
// failing). Such a document is never rejected for it.
bool IsLocalTrouble(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsInternal(s) ||
         absl::IsResourceExhausted(s) || absl::IsUnknown(s);
}

// Each approval `doc` carries must be its approver's own signature over
// this document as its sender signed it, for the document's content: the
// brokers on the way check them too, but the recipient trusts none of them.
// An unsigned one passes only with accept_unsigned (brokers that do not
// require signatures record decisions unsigned).
absl::Status CheckApprovals(const signing::SignatureVerifier& verifier,
                            const v1::Document& doc, bool accept_unsigned) {
  if (doc.approvals().empty()) return absl::OkStatus();
  const std::string manifest = sealing::HexOf(signing::DocumentDigest(doc));
  for (int i = 0; i < doc.approvals_size(); ++i) {
    const v1::Approval& approval = doc.approvals(i);
    const std::string field = absl::StrCat("approvals[", i, "]");
    if (approval.content_sha256() != doc.content_sha256()) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": decided on content ", approval.content_sha256(),
          ", not on this document's (", doc.content_sha256(), ")"));
    }
    if (!approval.has_signature() && accept_unsigned) continue;
    RETURN_IF_ERROR(
        signing::VerifyApproval(verifier, doc.id(), manifest, approval,
                                absl::StrCat(field, ".signature"), std::nullopt)
            .status());
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Connection::VerifyAndOpen(
    std::vector<IncomingDocument>* documents,
    std::vector<std::string>* rejected) const {
  for (auto it = documents->begin(); it != documents->end();) {
    std::string refusal;
    const v1::Document& doc = it->document;
    if (!doc.has_signature()) {
      if (!options_.accept_unsigned) {
        refusal =
            "the recipient's SDK refused it: it carries no signature of its "
            "sender";
      }
    } else {
      // The certificate must have been valid when the first broker took
      // the document.
      std::optional<absl::Time> accepted;
      if (doc.has_accepted_at()) accepted = FromTimestamp(doc.accepted_at());
      absl::StatusOr<signing::Signatory> who =
          signing::VerifyDocumentSignature(*verifier_, doc, accepted);
      if (!who.ok() && IsLocalTrouble(who.status())) {
        // Not the document's fault: it stays with the broker, unanswered,
        // and the session ends naming the trouble.
        return absl::Status(who.status().code(),
                            absl::StrCat("verifying document ", doc.id(), ": ",
                                         who.status().message()));
      }
      if (!who.ok()) {
        refusal =
            absl::StrCat("the recipient's SDK refused the sender's signature (",
                         absl::StatusCodeToString(who.status().code()),
                         "): ", who.status().message());
      } else {
        it->signed_by = who->principal.spiffe_id;
        it->signed_at = who->signed_at;
      }
    }
    if (refusal.empty()) {
      absl::Status approvals =
          CheckApprovals(*verifier_, doc, options_.accept_unsigned);
      if (IsLocalTrouble(approvals)) {
        return absl::Status(approvals.code(),
                            absl::StrCat("verifying the approvals of document ",
                                         doc.id(), ": ", approvals.message()));
      }
      if (!approvals.ok()) {
        refusal =
            absl::StrCat("the recipient's SDK refused an approval it carries (",
                         absl::StatusCodeToString(approvals.code()),
                         "): ", approvals.message());
      }
    }
    if (refusal.empty() && it->document.has_sealed()) {
      absl::Status opened = sealer_->Open(&it->document);
      if (opened.ok()) {
        it->was_sealed = true;
      } else if (absl::IsFailedPrecondition(opened) || IsLocalTrouble(opened)) {
        return opened;
      } else {
        refusal = absl::StrCat(
            "the recipient's SDK could not open the sealed content (",
            absl::StatusCodeToString(opened.code()), "): ", opened.message());
      }
    }
    if (refusal.empty()) {
      ++it;
      continue;
    }
    // Forged, altered or malformed: it will never be good. Tell the sender,
    // then let it go; the application never sees it.
    const std::string id = it->document.id();
    gpr_log(GPR_ERROR, "lienthong: rejecting %s: %s", id.c_str(),
            refusal.c_str());
    v1::ReportStatusRequest request;
    request.set_document_id(id);
    request.set_status(v1::BUSINESS_STATUS_REJECTED);
    request.set_reason(refusal);
    v1::ReportStatusResponse response;
    absl::Status reported =
        Call(RetryOn::kUnavailable, absl::ZeroDuration(),
             [&](Stub& stub, grpc::ClientContext& context) {
               return stub.ReportStatus(&context, request, &response);
             });
    if (!reported.ok()) {
      // Not acknowledged either: it comes again and is reported again.
      gpr_log(GPR_ERROR, "lienthong: reporting %s as REJECTED: %s", id.c_str(),
              reported.ToString().c_str());
      it = documents->erase(it);
      continue;
    }
    if (absl::Status s = dedup_->Add({id}); !s.ok()) {
      gpr_log(GPR_ERROR, "lienthong: %s", s.ToString().c_str());
    }
    rejected->push_back(id);
    it = documents->erase(it);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Connection>> Connection::Open(
    const ClientOptions& options, Principal::Kind kind) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  absl::StatusOr<Principal> identity = LoadIdentity(options, kind);
  if (!identity.ok()) return identity.status();
  absl::StatusOr<std::unique_ptr<DedupSet>> dedup =
      DedupSet::Open(options.dedup_capacity, options.dedup_state_file);
  if (!dedup.ok()) return dedup.status();

  absl::StatusOr<std::unique_ptr<Sealer>> sealer =
      Sealer::Create(options, *identity);
  if (!sealer.ok()) return sealer.status();
  std::unique_ptr<signing::Signer> signer;
  if (identity->is_org()) {
    absl::StatusOr<std::unique_ptr<signing::Signer>> s =
        signing::Signer::FromFiles(options.certificate_file,
                                   options.private_key_file);
    if (!s.ok()) return s.status();
    signer = *std::move(s);
  }
  absl::StatusOr<std::string> ca = ReadPemFile(options.ca_file);
  if (!ca.ok()) return ca.status();
  signing::VerifierOptions verifier_options;
  verifier_options.trust_root_pem = *std::move(ca);
  verifier_options.trust_domain = identity->trust_domain;
  verifier_options.crl_directory = options.crl_directory;
  absl::StatusOr<std::unique_ptr<signing::SignatureVerifier>> verifier =
      signing::SignatureVerifier::Create(std::move(verifier_options));
  if (!verifier.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ca_file ", options.ca_file, ": ", verifier.status().message()));
  }
  std::shared_ptr<Connection> connection(new Connection(
      options, *std::move(identity), *std::move(dedup), *std::move(sealer),
      std::move(signer), *std::move(verifier)));
  // One provider for all channels: it re-reads the files every minute, so
  // rotated certificates are used by new connections without a restart.
  auto certificates =
      std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
          options.private_key_file, options.certificate_file, options.ca_file,
          kCertificateRefreshSeconds);
  for (const std::string& address : options.endpoints) {
    Endpoint endpoint;
    endpoint.address = address;
    endpoint.channel = MakeChannel(address, options, certificates);
    endpoint.stub = v1::ExchangeService::NewStub(endpoint.channel);
    endpoint.admin_stub = v1::AdminService::NewStub(endpoint.channel);
    endpoint.incident_stub = v1::IncidentService::NewStub(endpoint.channel);
    endpoint.approval_stub = v1::ApprovalService::NewStub(endpoint.channel);
    connection->endpoints_.push_back(std::move(endpoint));
  }
  return connection;
}

std::vector<std::string> Connection::TakeUnseen(
    google::protobuf::RepeatedPtrField<v1::Delivery>* deliveries,
    std::vector<IncomingDocument>* fresh) const {
  std::vector<std::string> seen;
  for (v1::Delivery& delivery : *deliveries) {
    if (dedup_->Contains(delivery.document().id())) {
      seen.push_back(delivery.document().id());
      continue;
    }
    IncomingDocument incoming;
    incoming.document.Swap(delivery.mutable_document());
    incoming.attempt = delivery.attempt();
    fresh->push_back(std::move(incoming));
  }
  return seen;
}

size_t Connection::FailOver(size_t failed) const {
  size_t next = (failed + 1) % endpoints_.size();
  size_t expected = failed;
  preferred_.compare_exchange_strong(expected, next, std::memory_order_relaxed);
  return next;
}

absl::Status Connection::Call(RetryOn retry_on, absl::Duration extra_deadline,
                              const Attempt& attempt) const {
  return Retry(retry_on, extra_deadline,
               [&](size_t index, grpc::ClientContext& context) {
                 return attempt(*endpoints_[index].stub, context);
               });
}

absl::Status Connection::CallAdmin(RetryOn retry_on,
                                   const AdminAttempt& attempt) const {
  return Retry(retry_on, absl::ZeroDuration(),
               [&](size_t index, grpc::ClientContext& context) {
                 return attempt(*endpoints_[index].admin_stub, context);
               });
}

absl::Status Connection::CallApproval(
    RetryOn retry_on,
    const std::function<grpc::Status(v1::ApprovalService::Stub& stub,
                                     grpc::ClientContext& context)>& attempt)
    const {
  return Retry(retry_on, absl::ZeroDuration(),
               [&](size_t index, grpc::ClientContext& context) {
                 return attempt(*endpoints_[index].approval_stub, context);
               });
}

absl::Status Connection::CallIncidents(RetryOn retry_on,
                                       const IncidentAttempt& attempt) const {
  return Retry(retry_on, absl::ZeroDuration(),
               [&](size_t index, grpc::ClientContext& context) {
                 return attempt(*endpoints_[index].incident_stub, context);
               });
}

absl::Status Connection::Retry(
    RetryOn retry_on, absl::Duration extra_deadline,
    const std::function<grpc::Status(size_t, grpc::ClientContext&)>& attempt)
    const {
  const absl::Time give_up = absl::Now() + options_.retry_budget;
  Backoff backoff(options_.initial_backoff, options_.max_backoff);
  size_t index = preferred_endpoint();
  while (true) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(
        absl::Now() + options_.call_timeout + extra_deadline));
    grpc::Status status =
        ExplainConnectFailure(options_, attempt(index, context));
    if (status.ok()) return absl::OkStatus();
    if (!IsRetryable(status.error_code(), retry_on)) {
      return FromGrpcStatus(status);
    }
    // Another endpoint only when this one is unreachable: one that was
    // slow may have done the work (endpoints that are separate brokers do
    // not share idempotency keys), so it is asked again.
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE)
      index = FailOver(index);
    absl::Duration delay = backoff.Next();
    if (absl::Now() + delay >= give_up) return FromGrpcStatus(status);
    absl::SleepFor(delay);
  }
}

}  // namespace lienthong::client_internal

namespace lienthong {

std::optional<std::string> IdempotencyKeyOf(const absl::Status& status) {
  auto key = status.GetPayload(kIdempotencyKeyPayload);
  if (!key) return std::nullopt;
  return std::string(*key);
}

}  // namespace lienthong

namespace lienthong::client_internal {

absl::Status WithIdempotencyKey(absl::Status status, const std::string& key) {
  if (status.ok() || key.empty() || IdempotencyKeyOf(status)) return status;
  const bool maybe_stored =
      absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status) ||
      absl::IsCancelled(status) || absl::IsUnknown(status) ||
      absl::IsInternal(status) || absl::IsAborted(status);
  absl::Status out(
      status.code(),
      maybe_stored
          ? absl::StrCat(status.message(),
                         "; the document may be stored: send it again with "
                         "idempotency_key \"",
                         key, "\" (not a new one), and it is stored once")
          : status.message());
  out.SetPayload(kIdempotencyKeyPayload, absl::Cord(key));
  return out;
}

void PrepareForSend(const std::string& org, v1::Document* document) {
  if (document->sender().empty()) document->set_sender(org);
  if (document->idempotency_key().empty()) {
    document->set_idempotency_key(RandomToken());
  }
}

}  // namespace lienthong::client_internal
