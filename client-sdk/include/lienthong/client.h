// The Liên Thông client SDK: what an agency's document system embeds to send
// official documents to other organizations, receive what is sent to it,
// report business statuses and follow what it sent.
//
//   lienthong::ClientOptions options;
//   options.endpoints = {"broker.h49.example:7443"};
//   options.certificate_file = "org.pem";  // SPIFFE URI SAN names the org
//   options.private_key_file = "org.key";
//   options.ca_file = "ca.pem";
//   ASSIGN_OR_RETURN(std::unique_ptr<lienthong::Client> client,
//                    lienthong::Client::Open(options));
//   lienthong::v1::Document doc;
//   doc.add_recipients("000.00.00.G22");
//   doc.mutable_metadata()->set_subject("Báo cáo tình hình");
//   doc.set_body("...");
//   ASSIGN_OR_RETURN(lienthong::SendReceipt receipt, client->Send(doc));
//
// A Client is thread-safe: any number of threads may call it at once. Every
// method returns the broker's gRPC status translated to absl::Status with the
// same code and message (INVALID_ARGUMENT naming the field, PERMISSION_DENIED,
// RESOURCE_EXHAUSTED naming the limit, ...), or UNAVAILABLE / DEADLINE_EXCEEDED
// when no endpoint answered within the retry budget. A broker refusing this
// client's certificate closes the connection at the TLS handshake without
// saying why: that is UNAUTHENTICATED naming certificate_file when it has
// expired or crl_directory lists it as revoked (not retried), otherwise
// UNAVAILABLE with a note on the handshake.
#ifndef LIENTHONG_CLIENT_H_
#define LIENTHONG_CLIENT_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lienthong/attachments.h"
#include "lienthong/v1/exchange.pb.h"
#include "lienthong/v1/incidents.pb.h"

namespace lienthong {

struct ClientOptions {
  // Broker addresses "host:port", tried in order; the client fails over to
  // the next on UNAVAILABLE. At least one.
  std::vector<std::string> endpoints;
  // PEM files: this organization's certificate (exactly one SPIFFE URI SAN
  // spiffe://<td>/org/<code>), its private key, and the trust root.
  std::string certificate_file;
  std::string private_key_file;
  std::string ca_file;
  // OpenSSL hashed directory of CRLs (<issuer hash>.r0, .r1, ...; e.g. a copy
  // of the broker's tls.crl_directory): the broker's certificate, and at
  // Open this client's own, are checked against it. Empty: no revocation
  // checking. Default empty.
  std::string crl_directory;
  // Overrides the name checked against the broker certificate (default: the
  // host part of the endpoint).
  std::string server_name_override;
  // The brokers' bulk path (their attachments.bulk_listen port, at the host
  // of the endpoint in use): attachments are uploaded and downloaded there,
  // over OpenSSL on a connection of their own, for about half the CPU per
  // byte of gRPC's TLS; the same certificates, checks and answers. Where it
  // cannot be reached (refused, its handshake fails, or the broker closes
  // it without a word) the transfer goes through gRPC, and the SDK logs
  // why. 0: gRPC only. Default 0.
  int bulk_port = 0;
  // Deadline of one attempt of a unary call. Default 10 s.
  absl::Duration call_timeout = absl::Seconds(10);
  // Total time Send keeps retrying UNAVAILABLE with the same idempotency key.
  // Default 60 s.
  absl::Duration retry_budget = absl::Seconds(60);
  // First retry backoff, doubled up to max_backoff, with full jitter.
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(5);
  // File where received document ids are remembered so that redeliveries are
  // suppressed across restarts of the application; empty keeps them in memory
  // only. Default empty.
  std::string dedup_state_file;
  // How many received ids are remembered. Default 1,000,000.
  size_t dedup_capacity = 1'000'000;

  // End-to-end encryption. This organization's encryption certificate
  // (PEM: key usage keyAgreement, the same SPIFFE id as certificate_file,
  // issued by the trust root) and its private key: needed to open sealed
  // documents, and what PublishEncryptionCertificate publishes. Default
  // empty: sealed documents cannot be received.
  std::string encryption_certificate_file;
  std::string encryption_key_file;
  // Earlier encryption certificates and keys, still needed for documents
  // sealed before a rotation reached every sender.
  struct KeyPairFiles {
    std::string certificate_file;
    std::string private_key_file;
  };
  std::vector<KeyPairFiles> retired_encryption_keys;
  // Seal every document sent. Confidential and secret documents are always
  // sealed (the broker refuses them in plaintext). Default false.
  bool seal_all = false;
  // How long recipients' verified encryption certificates are reused before
  // they are fetched again. Default 5 min.
  absl::Duration encryption_certificate_cache = absl::Minutes(5);

  // Signatures. Every document sent is signed with this organization's key
  // (certificate_file / private_key_file): SendStreams sign batches, one
  // signature over the Merkle root of each (see signature_batch_interval).
  // Every custody receipt and every received document's signature is verified
  // against ca_file (and crl_directory). A received document without a valid
  // signature of its sender, or carrying an approval that is not its
  // approver's signature over it (Document.approvals), is reported REJECTED
  // and never handed over, unless what is missing is a signature and this is
  // true (for brokers configured with security.require_signatures: false).
  // Default false.
  bool accept_unsigned = false;
  // The SendStreams of one client sign at most one batch per interval
  // together: a document submitted sooner after the last batch waits (at
  // most this long; not at all when 4,096 wait) to share one signature with
  // the others, whichever stream they come from. An idle client signs and
  // sends at once. Longer means fewer signatures for the sender, its broker,
  // every broker on the way and the recipients to make and check (an ECDSA
  // verification costs about as much as storing a small document); open
  // one Client per organization and share it between threads. Default 5 ms.
  absl::Duration signature_batch_interval = absl::Milliseconds(5);

  // INVALID_ARGUMENT naming the field when an option is unusable.
  absl::Status Validate() const;
};

// A failed Send, or a SendStream submission answered with an error,
// carries the idempotency key the document was sent with (the SDK makes one
// when the document has none) under this type URL. When the failure leaves
// it unknown whether the broker stored the document (UNAVAILABLE,
// DEADLINE_EXCEEDED, ...), the message says so too.
inline constexpr char kIdempotencyKeyPayload[] =
    "type.googleapis.com/lienthong.idempotency_key";

// That key, if `status` carries it. Send the same document again with it
// (document.set_idempotency_key) and the broker stores it at most once:
//   if (auto key = IdempotencyKeyOf(sent.status()))
//   doc.set_idempotency_key(*key);
std::optional<std::string> IdempotencyKeyOf(const absl::Status& status);

// What the broker said about an accepted document.
struct SendReceipt {
  std::string document_id;
  std::string idempotency_key;
  bool duplicate = false;  // the key had been used; nothing new was stored
  absl::Time accepted_at;
  std::string content_sha256;  // over the ciphertext when sealed
  bool sealed = false;         // sealed end-to-end for the recipients
  // The broker's signed custody receipt, verified against ca_file. Keep it:
  // `lienthong verify` checks it offline. For a duplicate, the receipt of
  // the document stored first.
  v1::CustodyReceipt custody_receipt;
};

// Per-call options of Client::UploadAttachment.
struct UploadOptions {
  // Encrypt the content end to end before it leaves this process, under a
  // fresh key (see Attachment.Sealing in document.proto: AES-256-GCM in
  // 1 MiB segments), so that brokers store and forward only ciphertext. The
  // returned attachment then carries the key in `sealing`: it may go only
  // into a document that is sealed (confidential, secret, or every one with
  // ClientOptions::seal_all), which carries the key inside its sealed
  // content to the recipients. Stored attachments of a document that must
  // be sealed have to be uploaded this way. Default false.
  bool seal = false;
  // Hash the whole content before sending any of it and name it at the
  // start (UploadStart.sha256): content this org uploaded to the broker
  // within its attachments.usable_for is then not sent again (the broker
  // renews the org's right to it), which saves a slow link the transfer.
  // Costs a read of the whole content before the first byte goes out
  // (about 0.5 s per GiB here). Default false: chunks go out as they are
  // hashed and the last one names the content (UploadStart.named_at_end);
  // an interrupted upload still resumes from what the broker holds, also
  // from another process. Against a broker that does not take uploads
  // named at end the SDK hashes first anyway.
  bool hash_first = false;
};

// A document handed to the application by Receive or Fetch.
struct IncomingDocument {
  // A sealed document arrives opened: body and inline attachments in
  // plaintext, stored attachments as their sender uploaded them (with the
  // key in `sealing`: DownloadAttachment decrypts them), `sealed` cleared.
  v1::Document document;
  uint32_t attempt = 1;
  // It travelled end-to-end encrypted and was opened here.
  bool was_sealed = false;
  // Who signed it (the sender's SPIFFE id) and when; empty / InfinitePast
  // for an unsigned document taken with accept_unsigned.
  std::string signed_by;
  absl::Time signed_at = absl::InfinitePast();
};

struct ReceiveOptions {
  // Documents delivered and not yet acknowledged at once. Default 64.
  uint32_t max_in_flight = 64;
  // Handler threads; documents of one sender are handled in order only with
  // 1. Default 1.
  int handler_threads = 1;
  // Called with each notice the broker sends (an incident declared or
  // resolved that affects this org; the open ones again whenever the stream
  // (re)connects), on an SDK thread; must not block. Default: dropped.
  std::function<void(const v1::Notice&)> on_notice;
  // Called with a document's id and why, on an SDK thread, when the document
  // is put back to be delivered again after a pause (1 s, doubling to 60 s):
  // its handler failed, or this side cannot check it for now (UNAVAILABLE:
  // no current CRL of its signer's issuer in ClientOptions::crl_directory,
  // say while an operator replaces it; the session goes on and takes it once
  // it can). Must not block. Default: nothing.
  std::function<void(const std::string& document_id, const absl::Status&)>
      on_deferred;
  // How long a document this side cannot check keeps coming back before the
  // session ends with that error (Wait returns it; the document stays queued
  // at the broker): a CRL that does not come back is a fault to repair.
  absl::Duration max_unchecked = absl::Minutes(10);
};

// Returned by Receive; stops the stream when destroyed.
class ReceiveSession {
 public:
  virtual ~ReceiveSession() = default;
  // Stops receiving: no handler runs after Stop returns. The
  // acknowledgements of documents already handled are written first (for
  // at most 2 s while the broker is reachable); documents not acknowledged
  // are delivered again later. Idempotent.
  virtual void Stop() = 0;
  // Blocks until the session ends by Stop or by an error that retries cannot
  // cure (PERMISSION_DENIED, UNAUTHENTICATED, ...); returns that error or OK.
  // A broker that refuses this client's certificate at the TLS handshake
  // ends the session too: at once with UNAUTHENTICATED naming the file when
  // the certificate has expired or ClientOptions::crl_directory lists it as
  // revoked, otherwise with UNAVAILABLE once every reconnect for
  // ClientOptions::retry_budget was refused that way.
  virtual absl::Status Wait() = 0;
};

// A pipelined send stream: many documents in flight on one gRPC stream, each
// acknowledged on its own once durable at the broker. Thread-safe.
class SendStream {
 public:
  using Callback = std::function<void(absl::StatusOr<SendReceipt>)>;
  virtual ~SendStream() = default;
  // Queues `document` (idempotency key generated if empty); `done` runs on an
  // SDK thread once the broker answered. Blocks while `max_outstanding`
  // documents await their answers or their callbacks.
  virtual void Submit(v1::Document document, Callback done) = 0;
  // Waits until every submitted document has its answer; then closes.
  virtual absl::Status Close() = 0;
};

// The mark for a document that re-digitizes `entry` (a paper-register entry
// of the sending org): set it as document.metadata.redigitized. Keep the
// paper document's own dates in the metadata (issue_date).
v1::Redigitized RedigitizedMark(const v1::PaperRegisterEntry& entry);

class Client {
 public:
  // Loads the certificates and connects lazily. INVALID_ARGUMENT for bad
  // options, NOT_FOUND / INVALID_ARGUMENT for unreadable or unusable
  // certificate files (naming the file; an expired certificate, or one
  // crl_directory lists as revoked, is unusable), FAILED_PRECONDITION /
  // NOT_FOUND naming crl_directory when it holds no current CRL of ca_file.
  static absl::StatusOr<std::unique_ptr<Client>> Open(
      const ClientOptions& options);
  virtual ~Client() = default;

  // The organization code in this client's certificate.
  virtual const std::string& org() const = 0;

  // Sends one document and returns once it is durable at the broker. Fills
  // sender (this org) and a fresh idempotency key when empty; retries
  // UNAVAILABLE with the same key, so a retry never makes a second copy.
  // A confidential or secret document (every one with seal_all) is sealed
  // for its recipients first: FAILED_PRECONDITION names a recipient that
  // has published no encryption certificate; INVALID_ARGUMENT one whose
  // certificate does not verify against ca_file. The document is signed
  // with this organization's key; UNAUTHENTICATED when the broker's custody
  // receipt is missing or does not verify (the document may be stored: a
  // resend with the same key is safe).
  virtual absl::StatusOr<SendReceipt> Send(const v1::Document& document) = 0;

  // ---- Stored attachments (large content beside the document) ----

  // Uploads `source` to the broker in verified chunks and returns the
  // attachment to add to a document (name, content_type, sha256, size,
  // stored): `*doc.add_attachments() = *attachment;`, then Send. The content
  // is read once, a chunk at a time, hashed as it goes (see
  // UploadOptions::hash_first). An interrupted upload resumes from what the
  // broker holds durably, within retry_budget of the last progress; a later
  // call with the same content goes on from there too. INVALID_ARGUMENT for
  // a bad name, RESOURCE_EXHAUSTED above the broker's
  // attachments.max_bytes, DATA_LOSS when a FileSource's file was written
  // while it was sent (a source of the application's own is taken as its
  // Read returns it: each byte is read once, and hashed as read). Uploads
  // the content as it is: a document that must be sealed end
  // to end refuses such an attachment (Send: FAILED_PRECONDITION); use
  // UploadOptions::seal for those.
  absl::StatusOr<v1::Attachment> UploadAttachment(
      AttachmentSource& source, const std::string& name,
      const std::string& content_type,
      const ProgressCallback& progress = nullptr);

  // The same with `options`. With options.seal the content is encrypted on
  // the fly as it is read (a segment of 1 MiB at a time, never whole in
  // memory) and the ciphertext is uploaded: the attachment returned has the
  // ciphertext's sha256 and size and, in `sealing`, the key and the
  // plaintext's SHA-256 and size; progress counts ciphertext bytes.
  // DATA_LOSS when the content changed while it was read (its segments are
  // never encrypted twice with different content under one nonce). Each
  // sealed upload has its own key, so a new call with the same content
  // uploads it again. Thread-safe as the other methods; errors as above.
  virtual absl::StatusOr<v1::Attachment> UploadAttachment(
      AttachmentSource& source, const std::string& name,
      const std::string& content_type, const UploadOptions& options,
      const ProgressCallback& progress = nullptr) = 0;

  // Streams a stored attachment of a document this org sent or received
  // into `sink` (which must start empty), checking every chunk and, at the
  // end, the whole content against attachment.sha256 (DATA_LOSS naming the
  // attachment: the sink then holds content to discard). Resumes after
  // interruptions within retry_budget of the last progress. The sink and
  // `progress` are called on the calling thread only; a second thread reads
  // the next few chunks while one is checked.
  //
  // An attachment with `sealing` (of a sealed document, as Receive or Fetch
  // handed it over opened, or as UploadAttachment returned it to its
  // sender) is decrypted on the way: the sink receives the plaintext, a
  // segment (1 MiB) at a time once its authentication tag verified; at the
  // end the ciphertext's SHA-256 and size and the plaintext's must be those
  // in the attachment, which the sender's signature covers. DATA_LOSS naming
  // the attachment when anything does not verify (altered, reordered, cut
  // short, another blob); FAILED_PRECONDITION for a scheme this SDK cannot
  // open.
  virtual absl::Status DownloadAttachment(
      const std::string& document_id, const v1::Attachment& attachment,
      AttachmentSink& sink, const ProgressCallback& progress = nullptr) = 0;

  // The same into `path`: written to `path`.part (a later call continues
  // it), synced, and renamed to `path` only once verified. A sealed
  // attachment's .part file holds only plaintext that verified, a whole
  // segment at a time; a later call continues after its last whole segment.
  virtual absl::Status DownloadAttachmentToFile(
      const std::string& document_id, const v1::Attachment& attachment,
      const std::string& path, const ProgressCallback& progress = nullptr) = 0;

  // The evidence of a document this org sent or received (see
  // `lienthong verify`), signed by the broker.
  virtual absl::StatusOr<v1::EvidenceExport> GetEvidence(
      const std::string& document_id) = 0;

  // Makes options.encryption_certificate_file this organization's
  // encryption certificate at its broker (and, through the directory, at
  // every broker): senders seal for it from then on. FAILED_PRECONDITION
  // when none is configured; the broker's verdict otherwise.
  virtual absl::StatusOr<v1::PublishEncryptionCertificateResponse>
  PublishEncryptionCertificate() = 0;

  // Opens a pipelined stream for high-volume senders.
  virtual absl::StatusOr<std::unique_ptr<SendStream>> OpenSendStream(
      size_t max_outstanding = 1024) = 0;

  // Receives documents for this org and calls `handler` once per document
  // (duplicates from redelivery are suppressed). A document is acknowledged
  // only after `handler` returns OK; otherwise it is delivered again later.
  // Reconnects with backoff on UNAVAILABLE (a broker's maximum connection
  // age ends the stream now and then; it resumes on a new connection).
  // Each document's signature is verified and sealed documents are opened
  // first: one whose signature does not verify (or is missing) and one that
  // was altered (DATA_LOSS) are reported REJECTED to the sender with the
  // reason and acknowledged, never handed over; one this client has no key
  // for ends the session with FAILED_PRECONDITION and stays queued.
  using Handler = std::function<absl::Status(const IncomingDocument&)>;
  virtual absl::StatusOr<std::unique_ptr<ReceiveSession>> Receive(
      Handler handler, const ReceiveOptions& options = {}) = 0;

  // Pull-style receive: up to `max_documents`, waiting up to `wait` when none
  // is ready. Already-seen documents are acknowledged and skipped. The caller
  // acknowledges with Ack after handling them.
  virtual absl::StatusOr<std::vector<IncomingDocument>> Fetch(
      uint32_t max_documents, absl::Duration wait) = 0;
  virtual absl::Status Ack(const std::vector<std::string>& document_ids) = 0;

  // What waits for this org, without taking it.
  virtual absl::StatusOr<v1::ListInboxResponse> ListInbox(uint32_t limit) = 0;

  // ---- Incidents and the paper-fallback register ----

  // The incidents that affect this org (only the open ones with
  // `open_only`), newest first.
  virtual absl::StatusOr<v1::ListIncidentsResponse> ListIncidents(
      bool open_only) = 0;
  // Records a document this org handled on paper during an open incident.
  // FAILED_PRECONDITION when no open incident covers this org;
  // INVALID_ARGUMENT naming the field (empty subject, a date that is not
  // YYYY-MM-DD, a party that is not an organization code); NOT_FOUND for an
  // unknown incident_id. Not retried after DEADLINE_EXCEEDED (it could
  // record twice).
  virtual absl::StatusOr<v1::PaperRegisterEntry> RecordPaperDocument(
      const v1::RecordPaperDocumentRequest& request) = 0;
  // This org's register entries (request.org empty or this org).
  virtual absl::StatusOr<v1::ListPaperRegisterResponse> ListPaperRegister(
      const v1::ListPaperRegisterRequest& request) = 0;
  // Entries not yet re-digitized, per incident. To re-digitize one, Send
  // the document with metadata.redigitized naming the entry (see
  // RedigitizedMark): the broker settles the entry as it stores it.
  virtual absl::StatusOr<v1::ReconciliationReport> GetReconciliationReport(
      const std::string& incident_id) = 0;

  // Reports a business status (01-06, 15, 16) on a received document.
  virtual absl::StatusOr<v1::StatusEvent> ReportStatus(
      const std::string& document_id, v1::BusinessStatus status,
      const std::string& reason = "") = 0;

  // ---- Recall, update, replace (see StatusEvent.related_document_id) ----
  //
  //   v1::Document recall = NewChangeRequest(original_id, {"000.00.00.G22"},
  //       v1::BUSINESS_TYPE_RECALL, "Thu hồi QĐ 123/QĐ-UBND");
  //   ASSIGN_OR_RETURN(SendReceipt r, client->Send(recall));
  //   // at the recipient, on receiving it:
  //   client->AnswerChangeRequest(original_id, /*agree=*/true, "");
  //
  // Answers the recall, update or replace request pending for this org's
  // copy of `document_id` (the original, not the request): 15 AGREED or 16
  // REFUSED (a refusal needs a reason). FAILED_PRECONDITION when none is
  // pending (or it was answered, or the copy was withdrawn before delivery).
  absl::StatusOr<v1::StatusEvent> AnswerChangeRequest(
      const std::string& document_id, bool agree,
      const std::string& reason = "") {
    return ReportStatus(
        document_id,
        agree ? v1::BUSINESS_STATUS_AGREED : v1::BUSINESS_STATUS_REFUSED,
        reason);
  }

  // ---- Paper conversion ----

  // Records that this org converted a document it sent or received to
  // paper, with the reason (required) and, optionally, the official who
  // did it. INVALID_ARGUMENT naming `reason`; PERMISSION_DENIED naming the
  // policy rule that forbids it; NOT_FOUND for a document this org has no
  // part in. Not repeated on failure (each call is one conversion).
  virtual absl::StatusOr<v1::RecordPaperConversionResponse>
  RecordPaperConversion(const std::string& document_id,
                        const std::string& reason,
                        const std::string& converted_by = "") = 0;
  // This org's conversions recorded at its broker, newest first (limit 0:
  // 100, at most 1000).
  virtual absl::StatusOr<std::vector<v1::PaperConversion>> ListPaperConversions(
      uint32_t limit = 0) = 0;

  // The status of a document this org sent or received.
  virtual absl::StatusOr<v1::DocumentStatus> GetDocumentStatus(
      const std::string& document_id) = 0;

  // Calls `on_event` for status events of what this org sent (one document,
  // or all when `document_id` is empty), replaying those after
  // `after_sequence` first; resumes after the last seen event on reconnect.
  // Runs until `stop` becomes true or a non-retryable error; returns it.
  virtual absl::Status Watch(
      const std::string& document_id, uint64_t after_sequence,
      const std::function<void(const v1::StatusEvent&)>& on_event,
      const std::atomic<bool>& stop) = 0;
};

// A RECALL, UPDATE or REPLACE of `original_id` (which this org sent to
// each of `recipients`) for Client::Send. An UPDATE or REPLACE gets its new
// body and attachments from the caller; a RECALL carries `subject` and, as
// its body, `reason` (the subject when empty). Express urgency: it may overtake
// the original, which the broker handles.
v1::Document NewChangeRequest(const std::string& original_id,
                              const std::vector<std::string>& recipients,
                              v1::BusinessType type, const std::string& subject,
                              const std::string& reason = "");

}  // namespace lienthong

#endif  // LIENTHONG_CLIENT_H_
