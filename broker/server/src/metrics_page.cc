#include "broker/server/src/metrics_page.h"

#include <map>
#include <string>

#include "absl/time/clock.h"
#include "lienthong/common/certificate.h"
#include "lienthong/common/metrics.h"

namespace lienthong::server {

std::string RenderMetrics(const MetricsSources& s) {
  PrometheusText t;
  absl::Time now = absl::Now();
  auto age = [&](absl::Time since) {
    return std::max(0.0, absl::ToDoubleSeconds(now - since));
  };
  t.Gauge("lienthong_start_time_seconds",
          "When this broker process started (Unix time).",
          absl::ToDoubleSeconds(s.started_at - absl::UnixEpoch()));

  if (s.incidents) {
    std::map<std::string, int> open;
    for (const char* severity : {"MINOR", "MAJOR", "CRITICAL"}) open[severity];
    for (const v1::Incident& i : s.incidents->OpenIncidents()) {
      std::string name = v1::IncidentSeverity_Name(i.severity());
      ++open[name.substr(name.rfind('_') + 1)];
    }
    for (const auto& [severity, n] : open) {
      t.Gauge("lienthong_incidents_open",
              "Open incidents this broker knows of (declared here or "
              "announced by a peer), by severity.",
              n, {{"severity", severity}});
    }
  }

  const broker::ExchangeMetrics& m = s.exchange->metrics();
  t.Counter("lienthong_documents_accepted_total",
            "Documents accepted from this broker's senders (durable).",
            m.accepted.value());
  for (const auto& [code, n] : m.refused.Read()) {
    t.Counter("lienthong_sends_refused_total",
              "Sends refused before anything was stored, by status code.", n,
              {{"code", code}});
  }
  t.Counter("lienthong_copies_delivered_total",
            "Copies acknowledged by their recipients at this broker.",
            m.delivered.value());
  for (const auto& [where, n] : m.denied.Read()) {
    t.Counter("lienthong_copies_denied_total",
              "Copies denied after acceptance: at delivery (policy), on "
              "arrival from a peer, or refused by a peer.",
              n, {{"where", where}});
  }
  t.Counter("lienthong_transfers_out_total",
            "Transfers a peer broker took into its custody.",
            m.transfers_out.value());
  t.Counter("lienthong_transfers_in_total",
            "Transfers this broker took from peer brokers.",
            m.transfers_in.value());
  t.Counter("lienthong_returned_events_in_total",
            "Status events peer brokers returned to this broker.",
            m.events_in.value());
  t.Histogram("lienthong_send_seconds",
              "From a send's arrival to its durable acknowledgement.",
              m.send_seconds.Read());
  t.Histogram("lienthong_delivery_seconds",
              "From acceptance at the document's first broker to the "
              "recipient's acknowledgement here.",
              m.delivery_seconds.Read());

  for (const broker::OrgQueueStats& q : s.exchange->OrgStats()) {
    t.Gauge("lienthong_queue_waiting",
            "Copies waiting for an organization (in flight included).",
            q.waiting, {{"org", q.org}});
    t.Gauge("lienthong_queue_in_flight",
            "Copies handed out and not yet acknowledged.", q.in_flight,
            {{"org", q.org}});
    if (q.oldest) {
      t.Gauge("lienthong_queue_oldest_age_seconds",
              "Age of the oldest waiting copy (since it entered the queue or "
              "the broker started).",
              age(*q.oldest), {{"org", q.org}});
    }
  }

  t.Gauge("lienthong_approvals_waiting",
          "Documents held for a human approval (delivered to nobody yet).",
          s.exchange->Stats().held_for_approval);

  std::vector<broker::PeerLinkState> links;
  if (s.links) links = s.links->States();
  for (const broker::PeerQueueStats& p : s.exchange->PeerStats()) {
    t.Gauge("lienthong_peer_outbox",
            "Transfers waiting for a peer broker (in flight included).",
            p.outbox, {{"peer", p.peer}});
    t.Gauge("lienthong_peer_outbox_oldest_age_seconds",
            "Age of the oldest transfer waiting for a peer.",
            p.oldest_outbox ? age(*p.oldest_outbox) : 0, {{"peer", p.peer}});
    t.Gauge("lienthong_peer_returns",
            "Status events waiting to go back to a peer.", p.returns,
            {{"peer", p.peer}});
    t.Gauge("lienthong_peer_link_up",
            "1 while a link is open: outbound (we dialed) or inbound.",
            p.outbound_link ? 1 : 0,
            {{"peer", p.peer}, {"direction", "outbound"}});
    t.Gauge("lienthong_peer_link_up",
            "1 while a link is open: outbound (we dialed) or inbound.",
            p.inbound_link ? 1 : 0,
            {{"peer", p.peer}, {"direction", "inbound"}});
  }
  for (const broker::PeerLinkState& l : links) {
    t.Counter("lienthong_peer_link_connects_total",
              "Outbound links established to a peer.", l.connects,
              {{"peer", l.peer}});
  }

  storage::StoreStats st = s.store->Stats();
  t.Counter("lienthong_store_writes_total", "Write batches applied.",
            st.writes);
  t.Counter("lienthong_store_syncs_total",
            "WAL syncs; each makes a group of writes durable.", st.syncs);
  t.Histogram("lienthong_store_writes_per_sync",
              "Writes made durable by one WAL sync (group commit).",
              st.writes_per_sync);
  t.Gauge("lienthong_store_disk_bytes", "RocksDB table files, bytes.",
          st.disk_bytes);
  t.Gauge("lienthong_store_memory_bytes", "RocksDB memtables, bytes.",
          st.memory_bytes);

  if (s.attachment_metrics != nullptr) {
    const broker::AttachmentMetrics& am = *s.attachment_metrics;
    t.Counter("lienthong_attachment_bytes_in_total",
              "Attachment chunk bytes verified and stored (or compared).",
              am.bytes_in.value());
    t.Counter("lienthong_attachment_bytes_out_total",
              "Attachment chunk bytes sent to downloaders.",
              am.bytes_out.value());
    t.Counter("lienthong_attachment_uploads_completed_total",
              "Attachment uploads completed and verified.",
              am.uploads_completed.value());
    for (const auto& [code, n] : am.refused.Read()) {
      t.Counter("lienthong_attachment_calls_refused_total",
                "Attachment uploads and downloads refused, by status code.", n,
                {{"code", code}});
    }
  }
  if (s.attachments != nullptr) {
    absl::StatusOr<storage::AttachmentStats> as = s.attachments->Stats();
    if (as.ok()) {
      t.Gauge("lienthong_attachments_stored", "Complete stored attachments.",
              as->attachments);
      t.Gauge("lienthong_attachments_stored_bytes",
              "Content bytes of the complete stored attachments.", as->bytes);
      t.Gauge("lienthong_attachment_partial_uploads",
              "Interrupted uploads kept for their resume.",
              as->partial_uploads);
      t.Gauge("lienthong_attachment_uploads_running", "Uploads running now.",
              as->uploads_running);
    }
  }

  // Re-read at every scrape: the file watcher may have rotated it.
  absl::StatusOr<CertificateInfo> cert =
      ReadCertificateFile(s.certificate_file);
  t.Gauge("lienthong_certificate_expiry_timestamp_seconds",
          "When the broker's certificate file expires (Unix time); 0 if it "
          "cannot be read.",
          cert.ok() ? absl::ToDoubleSeconds(cert->not_after - absl::UnixEpoch())
                    : 0,
          {{"file", s.certificate_file}});

  if (s.policy) {
    std::shared_ptr<const policy::Policy> p = s.policy->Current();
    t.Gauge("lienthong_policy_info", "The serving policy version (value 1).", 1,
            {{"version", p ? p->version() : "none"}});
    t.Gauge("lienthong_policy_rules", "Rules in the serving policy.",
            p ? p->rule_count() : 0);
    t.Gauge("lienthong_policy_last_reload_failed",
            "1 when the last reload of the policy file was refused (the "
            "previous policy keeps serving).",
            s.policy->last_reload_status().ok() ? 0 : 1);
  }
  return t.Take();
}

}  // namespace lienthong::server
