// The /metrics page of a broker: what the exchange, its store, its links
// and its policy report, in the Prometheus text format.
#ifndef LIENTHONG_BROKER_SERVER_SRC_METRICS_PAGE_H_
#define LIENTHONG_BROKER_SERVER_SRC_METRICS_PAGE_H_

#include <string>

#include "absl/time/time.h"
#include "lienthong/broker/attachment_service.h"
#include "lienthong/broker/exchange.h"
#include "lienthong/broker/federation.h"
#include "lienthong/policy/policy.h"
#include "lienthong/storage/attachments.h"
#include "lienthong/storage/store.h"

namespace lienthong::server {

struct MetricsSources {
  broker::Exchange* exchange = nullptr;
  storage::Store* store = nullptr;
  broker::PeerLinks* links = nullptr;
  policy::ServedPolicy* policy = nullptr;
  storage::AttachmentStore* attachments = nullptr;
  const broker::AttachmentMetrics* attachment_metrics = nullptr;
  broker::Incidents* incidents = nullptr;  // optional
  std::string certificate_file;  // the broker's; its expiry is reported
  std::string ca_file;
  absl::Time started_at;
};

std::string RenderMetrics(const MetricsSources& sources);

}  // namespace lienthong::server

#endif  // LIENTHONG_BROKER_SERVER_SRC_METRICS_PAGE_H_
