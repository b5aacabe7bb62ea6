// lienthong-bench: load generator against a running broker over mutual TLS.
//
//   lienthong-bench --endpoint 127.0.0.1:7443 --pki pki --senders 4
//       --receivers 2 --duration 10 --size 1024 [--rate 15000]
//       [--broker-pid PID[,PID...]] [--receive-endpoint 127.0.0.1:7444]
//   lienthong-bench --endpoint 127.0.0.1:7443 --pki pki --attachment-size 1GiB
//       [--attachments 3] [--broker-pid PID]
//
// Senders pipeline 1 KiB documents on SendStreams (every acknowledgement means
// the document is durable: WAL synced); receivers take them on Receive
// streams and acknowledge each. Prints documents/s end to end (accepted,
// delivered and acknowledged inside the measured window), p50/p99/p99.9 of
// send→ack and send→receive latency, where that latency goes hop by hop,
// the CPU time each process used per document, and the broker's peak RSS.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "lienthong/attachments.h"
#include "lienthong/client.h"

namespace {

using Clock = std::chrono::steady_clock;

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             Clock::now().time_since_epoch())
      .count();
}

int64_t WallNanos() { return absl::ToUnixNanos(absl::Now()); }

struct Latencies {
  absl::Mutex mu;
  std::vector<int64_t> send_ack_us;
  std::vector<int64_t> end_to_end_us;
  // Where the time goes, from the wall-clock times each broker writes on
  // the document's trace as it takes it: [0] sender to the first broker,
  // [i] broker i to broker i+1, [last] the last broker to the recipient's
  // handler. Only for documents that all went the same number of hops.
  std::vector<std::vector<int64_t>> segment_us;
};

int64_t Percentile(std::vector<int64_t>& v, double p) {
  if (v.empty()) return 0;
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * v.size()));
  std::nth_element(v.begin(), v.begin() + i, v.end());
  return v[i];
}

std::string PeakRss(int pid) {
  if (pid <= 0) return "n/a";
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      long kb = std::atol(line.c_str() + 6);
      return absl::StrFormat("%.1f MiB", kb / 1024.0);
    }
  }
  return "n/a";
}

// CPU time (user + system) a process has used so far, seconds; pid 0 is
// this one. -1 when it cannot be read.
double CpuSeconds(int pid) {
  std::ifstream in(pid > 0 ? absl::StrCat("/proc/", pid, "/stat")
                           : std::string("/proc/self/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  // Fields after the command name, which is in parentheses and may hold
  // spaces: state is field 3, utime 14, stime 15.
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::vector<std::string> fields =
      absl::StrSplit(stat.substr(close + 2), ' ', absl::SkipEmpty());
  if (fields.size() < 13) return -1;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  return (std::atof(fields[11].c_str()) + std::atof(fields[12].c_str())) /
         ticks;
}

// --bulk-port: every client moves attachments over the brokers' bulk
// path (ClientOptions::bulk_port).
int bulk_port = 0;

lienthong::ClientOptions OptionsFor(const std::string& pki,
                                    const std::string& endpoint,
                                    const std::string& org) {
  lienthong::ClientOptions o;
  o.endpoints = {endpoint};
  o.bulk_port = bulk_port;
  o.ca_file = pki + "/ca.pem";
  o.certificate_file = pki + "/orgs/" + org + ".pem";
  o.private_key_file = pki + "/orgs/" + org + ".key";
  return o;
}

// Resident set now and at its peak (VmRSS, VmHWM) of a process, bytes.
std::pair<uint64_t, uint64_t> Rss(int pid) {
  std::ifstream in(pid > 0 ? absl::StrCat("/proc/", pid, "/status")
                           : std::string("/proc/self/status"));
  std::string line;
  uint64_t rss = 0, hwm = 0;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) rss = std::atoll(line.c_str() + 6) * 1024;
    if (line.rfind("VmHWM:", 0) == 0) hwm = std::atoll(line.c_str() + 6) * 1024;
  }
  return {rss, hwm};
}

// "1GiB", "512MiB", "64KiB", "1000000": bytes; 0 when malformed.
uint64_t ParseBytes(const std::string& text) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(text[digits])) ++digits;
  if (digits == 0) return 0;
  uint64_t n = std::stoull(text.substr(0, digits));
  std::string unit = text.substr(digits);
  if (unit.empty() || unit == "B") return n;
  if (unit == "KiB") return n << 10;
  if (unit == "MiB") return n << 20;
  if (unit == "GiB") return n << 30;
  return 0;
}

// Content made up on the fly, the same for the same (seed, offset): an
// attachment of any size without a file or memory to hold it. A read costs
// about what reading a cached file costs (one copy): every 1 MiB period is
// one pseudo-random block made once, its first word replaced by a word of
// the period's own, so no two periods (and no two seeds) are alike.
class GeneratedSource final : public lienthong::AttachmentSource {
 public:
  GeneratedSource(uint64_t seed, uint64_t size) : seed_(seed), size_(size) {
    block_.resize(kPeriod);
    for (uint64_t w = 0; w < kPeriod / 8; ++w) {
      const uint64_t z = Word(w);
      memcpy(block_.data() + w * 8, &z, 8);
    }
  }
  uint64_t size() const override { return size_; }
  absl::StatusOr<std::string> Read(uint64_t offset, uint64_t length) override {
    std::string out;
    out.reserve(length);
    while (out.size() < length) {
      const uint64_t at = offset + out.size();
      const uint64_t in_period = at % kPeriod;
      const uint64_t n = std::min(length - out.size(), kPeriod - in_period);
      if (in_period < 8) {
        // The period's own first word.
        const uint64_t z = Word(kPeriod / 8 + at / kPeriod);
        const uint64_t k = std::min<uint64_t>(n, 8 - in_period);
        out.append(reinterpret_cast<const char*>(&z) + in_period, k);
        out.append(block_, in_period + k, n - k);
      } else {
        out.append(block_, in_period, n);
      }
    }
    return out;
  }

 private:
  static constexpr uint64_t kPeriod = 1 << 20;

  uint64_t Word(uint64_t word) const {
    uint64_t z = seed_ + word * 0x9e3779b97f4a7c15ULL;  // splitmix64
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  const uint64_t seed_;
  const uint64_t size_;
  std::string block_;
};

// Counts what arrives; the SDK checks every chunk and the whole hash.
class CountingSink final : public lienthong::AttachmentSink {
 public:
  uint64_t offset() const override { return offset_; }
  absl::Status Write(absl::string_view data) override {
    offset_ += data.size();
    return absl::OkStatus();
  }

 private:
  uint64_t offset_ = 0;
};

// --attachment-size: one sender uploads `count` attachments of `size` bytes
// and sends a document with each; one receiver takes each document and
// downloads its attachment (verified) while the next one is uploading.
int RunAttachments(const std::string& pki, const std::string& endpoint,
                   const std::string& receive_endpoint,
                   const std::string& sender, const std::string& recipient,
                   uint64_t size, int count, int broker_pid) {
  auto tx = lienthong::Client::Open(OptionsFor(pki, endpoint, sender));
  auto rx =
      lienthong::Client::Open(OptionsFor(pki, receive_endpoint, recipient));
  if (!tx.ok() || !rx.ok()) {
    std::cerr << "lienthong-bench: " << (tx.ok() ? rx.status() : tx.status())
              << "\n";
    return 1;
  }
  const auto sdk_before = Rss(0);
  const auto broker_before = Rss(broker_pid);
  const double sdk_cpu_before = CpuSeconds(0);
  const double broker_cpu_before = broker_pid > 0 ? CpuSeconds(broker_pid) : -1;
  std::atomic<bool> failed{false};
  std::atomic<int64_t> upload_ns{0}, download_ns{0};
  const uint64_t seed = static_cast<uint64_t>(NowNanos());
  const int64_t start = NowNanos();
  std::thread receiver([&] {
    int done = 0;
    const int64_t give_up = NowNanos() + int64_t{3600} * 1'000'000'000;
    while (done < count && !failed.load() && NowNanos() < give_up) {
      auto docs = (*rx)->Fetch(1, absl::Seconds(1));
      if (!docs.ok()) {
        std::cerr << "fetch: " << docs.status() << "\n";
        failed = true;
        return;
      }
      for (const lienthong::IncomingDocument& in : *docs) {
        for (const lienthong::v1::Attachment& a : in.document.attachments()) {
          CountingSink sink;
          int64_t t0 = NowNanos();
          absl::Status s = (*rx)->DownloadAttachment(in.document.id(), a, sink);
          download_ns += NowNanos() - t0;
          if (!s.ok()) {
            std::cerr << "download: " << s << "\n";
            failed = true;
            return;
          }
        }
        if (absl::Status s = (*rx)->Ack({in.document.id()}); !s.ok()) {
          std::cerr << "ack: " << s << "\n";
          failed = true;
          return;
        }
        ++done;
      }
    }
    if (done < count) failed = true;
  });
  for (int i = 0; i < count && !failed.load(); ++i) {
    GeneratedSource source(seed + static_cast<uint64_t>(i) * 7919, size);
    int64_t t0 = NowNanos();
    auto attachment = (*tx)->UploadAttachment(
        source, absl::StrCat("bench-", i, ".bin"), "application/octet-stream");
    upload_ns += NowNanos() - t0;
    if (!attachment.ok()) {
      std::cerr << "upload: " << attachment.status() << "\n";
      failed = true;
      break;
    }
    lienthong::v1::Document doc;
    doc.add_recipients(recipient);
    doc.mutable_metadata()->set_subject("lienthong-bench attachment");
    doc.mutable_metadata()->set_document_type("Công văn");
    doc.set_body("attachment benchmark");
    *doc.add_attachments() = *attachment;
    auto sent = (*tx)->Send(doc);
    if (!sent.ok()) {
      std::cerr << "send: " << sent.status() << "\n";
      failed = true;
    }
  }
  receiver.join();
  const double seconds = (NowNanos() - start) / 1e9;
  const auto sdk_after = Rss(0);
  const auto broker_after = Rss(broker_pid);
  const double sdk_cpu = CpuSeconds(0) - sdk_cpu_before;
  const double broker_cpu =
      broker_pid > 0 ? CpuSeconds(broker_pid) - broker_cpu_before : -1;
  const double mib = static_cast<double>(size) / (1 << 20);
  auto mib_s = [&](int64_t ns) {
    return ns > 0 ? mib * count / (ns / 1e9) : 0.0;
  };
  std::printf(
      "lienthong-bench: %d attachment(s) of %.0f MiB, %s -> %s, uploads "
      "overlapping downloads\n",
      count, mib, sender.c_str(), recipient.c_str());
  std::printf(
      "  send->receive throughput:    %8.1f MiB/s (%.1f s, from the "
      "first upload to the last verified download)\n",
      mib * count / seconds, seconds);
  std::printf("  upload (hash + chunks):      %8.1f MiB/s\n",
              mib_s(upload_ns.load()));
  std::printf("  download (chunks, verified): %8.1f MiB/s\n",
              mib_s(download_ns.load()));
  // Less at the mercy of the machine's neighbours than the rate: what a
  // change of the path costs or saves shows here first.
  const double gib = mib * count / 1024;
  // (The load generator's CPU: the SDK's and the made-up content's.)
  auto per_gib = [gib](double before, double spent) {
    return before >= 0 ? absl::StrFormat("%.2f s", spent / gib)
                       : std::string("n/a");
  };
  std::printf("  CPU per GiB sent and received: SDK %s, broker %s\n",
              per_gib(sdk_cpu_before, sdk_cpu).c_str(),
              broker_pid > 0 ? per_gib(broker_cpu_before, broker_cpu).c_str()
                             : "n/a (--broker-pid)");
  std::printf(
      "  SDK peak RSS growth:         %8.1f MiB (%.1f -> peak %.1f)\n",
      (static_cast<double>(sdk_after.second) - sdk_before.first) / (1 << 20),
      sdk_before.first / 1048576.0, sdk_after.second / 1048576.0);
  if (broker_pid > 0) {
    std::printf(
        "  broker peak RSS growth:      %8.1f MiB (%.1f -> peak %.1f)\n",
        (static_cast<double>(broker_after.second) - broker_before.first) /
            (1 << 20),
        broker_before.first / 1048576.0, broker_after.second / 1048576.0);
  }
  return failed.load() ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lienthong-bench: end-to-end load against a running broker"};
  std::string endpoint = "127.0.0.1:7443", pki = "pki";
  int senders = 4, receivers = 2;
  std::vector<int> pids;
  double duration_s = 10, warmup_s = 2, rate = 0;
  size_t size = 1024, window = 2048;
  std::vector<std::string> sender_orgs = {"000.00.00.H49", "000.00.00.H50",
                                          "000.01.23.H49"};
  std::string recipient = "000.00.00.G22";
  app.add_option("--endpoint", endpoint, "broker host:port");
  app.add_option(
      "--bulk-port", bulk_port,
      "upload and download attachments over the broker's bulk path at this "
      "port (its attachments.bulk_listen); 0: through gRPC");
  app.add_option("--pki", pki,
                 "dev PKI directory (deploy/pki/make-dev-pki.sh)");
  app.add_option("--senders", senders,
                 "sender streams (the streams of one organization share one "
                 "Client, as an agency's threads would)");
  bool client_per_stream = false;
  app.add_flag("--client-per-stream", client_per_stream,
               "give each sender stream a Client (connection and signature "
               "batches) of its own");
  app.add_option("--receivers", receivers,
                 "receive streams for the recipient org");
  app.add_option("--duration", duration_s, "measured seconds");
  app.add_option("--warmup", warmup_s, "seconds before measuring");
  app.add_option("--size", size, "body bytes per document");
  app.add_option("--rate", rate,
                 "total documents/s to offer (0 = as fast as possible)");
  app.add_option("--window", window, "unacknowledged sends per sender stream");
  app.add_option("--broker-pid", pids,
                 "brokers on the path, in order (PID[,PID...]): their peak "
                 "RSS and CPU time per document, from /proc")
      ->delimiter(',');
  app.add_option("--sender-org", sender_orgs, "sending organizations (cycled)");
  app.add_option("--recipient", recipient, "receiving organization");
  std::string receive_endpoint;
  app.add_option("--receive-endpoint", receive_endpoint,
                 "broker the recipient takes documents from (default: "
                 "--endpoint); another broker of a federation measures the "
                 "hops between them");
  std::string attachment_size;
  int attachment_count = 3;
  app.add_option("--attachment-size", attachment_size,
                 "measure stored attachments instead: SIZE (e.g. 1GiB) each, "
                 "from --sender-org (default 000.00.00.G22) to --recipient "
                 "(default 000.00.00.H49)");
  app.add_option("--attachments", attachment_count,
                 "with --attachment-size: how many");
  CLI11_PARSE(app, argc, argv);
  if (receive_endpoint.empty()) receive_endpoint = endpoint;
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  if (!attachment_size.empty()) {
    uint64_t bytes = ParseBytes(attachment_size);
    if (bytes == 0 || attachment_count < 1) {
      std::cerr << "lienthong-bench: --attachment-size \"" << attachment_size
                << "\": expected e.g. 1GiB, 256MiB or bytes; --attachments "
                   "at least 1\n";
      return 2;
    }
    // The dev policy caps reports to the centre at 20 MiB: by default the
    // centre sends to a province.
    bool default_orgs = app.count("--sender-org") == 0;
    return RunAttachments(
        pki, endpoint, receive_endpoint,
        default_orgs ? "000.00.00.G22" : sender_orgs[0],
        app.count("--recipient") == 0 ? "000.00.00.H49" : recipient, bytes,
        attachment_count, pids.empty() ? 0 : pids[0]);
  }

  Latencies lat;
  std::atomic<bool> stop_sending{false};
  std::atomic<int64_t> measure_start{0}, measure_end{INT64_MAX};
  std::atomic<uint64_t> acked_in_window{0}, received_in_window{0},
      send_errors{0}, received_total{0}, sent_total{0};

  // Receivers first, so nothing piles up.
  auto rx_client =
      lienthong::Client::Open(OptionsFor(pki, receive_endpoint, recipient));
  if (!rx_client.ok()) {
    std::cerr << "lienthong-bench: " << rx_client.status() << "\n";
    return 1;
  }
  std::vector<std::unique_ptr<lienthong::ReceiveSession>> sessions;
  for (int i = 0; i < receivers; ++i) {
    lienthong::ReceiveOptions ro;
    ro.max_in_flight = 1024;
    auto s =
        (*rx_client)
            ->Receive(
                [&](const lienthong::IncomingDocument& in) {
                  int64_t now = NowNanos();
                  int64_t wall_now = WallNanos();
                  int64_t sent = 0, sent_wall = 0;
                  const std::string& body = in.document.body();
                  if (body.size() >= 2 * sizeof(sent)) {
                    memcpy(&sent, body.data(), sizeof(sent));
                    memcpy(&sent_wall, body.data() + sizeof(sent),
                           sizeof(sent_wall));
                  }
                  received_total.fetch_add(1, std::memory_order_relaxed);
                  if (sent >= measure_start.load() &&
                      now <= measure_end.load()) {
                    received_in_window.fetch_add(1, std::memory_order_relaxed);
                    absl::MutexLock lock(&lat.mu);
                    lat.end_to_end_us.push_back((now - sent) / 1000);
                    const auto& trace = in.document.trace();
                    size_t segments = trace.size() + 1;
                    if (lat.segment_us.empty()) lat.segment_us.resize(segments);
                    if (sent_wall > 0 && lat.segment_us.size() == segments) {
                      int64_t before = sent_wall;
                      for (int h = 0; h <= trace.size(); ++h) {
                        int64_t at =
                            h < trace.size()
                                ? trace[h].at().seconds() * 1'000'000'000 +
                                      trace[h].at().nanos()
                                : wall_now;
                        lat.segment_us[h].push_back((at - before) / 1000);
                        before = at;
                      }
                    }
                  }
                  return absl::OkStatus();
                },
                ro);
    if (!s.ok()) {
      std::cerr << "lienthong-bench: receive: " << s.status() << "\n";
      return 1;
    }
    sessions.push_back(*std::move(s));
  }

  // One Client per sending organization, shared by its streams (unless
  // --client-per-stream).
  absl::Mutex clients_mu;
  std::map<std::string, std::shared_ptr<lienthong::Client>> clients;
  auto client_for = [&](const std::string& org)
      -> absl::StatusOr<std::shared_ptr<lienthong::Client>> {
    absl::MutexLock lock(&clients_mu);
    if (!client_per_stream) {
      if (auto it = clients.find(org); it != clients.end()) return it->second;
    }
    auto opened = lienthong::Client::Open(OptionsFor(pki, endpoint, org));
    if (!opened.ok()) return opened.status();
    std::shared_ptr<lienthong::Client> shared = *std::move(opened);
    if (!client_per_stream) clients[org] = shared;
    return shared;
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < senders; ++i) {
    threads.emplace_back([&, i] {
      auto client = client_for(sender_orgs[i % sender_orgs.size()]);
      if (!client.ok()) {
        std::cerr << "lienthong-bench: " << client.status() << "\n";
        send_errors++;
        return;
      }
      auto stream = (*client)->OpenSendStream(window);
      if (!stream.ok()) {
        std::cerr << "lienthong-bench: " << stream.status() << "\n";
        send_errors++;
        return;
      }
      lienthong::v1::Document doc;
      doc.add_recipients(recipient);
      doc.mutable_metadata()->set_subject("lienthong-bench");
      doc.mutable_metadata()->set_document_type("Công văn");
      std::string body(std::max<size_t>(size, 16), 'x');
      const double per_sender_rate = rate > 0 ? rate / senders : 0;
      const int64_t start = NowNanos();
      uint64_t n = 0;
      std::vector<int64_t> local_send_ack;
      absl::Mutex local_mu;
      while (!stop_sending.load(std::memory_order_relaxed)) {
        if (per_sender_rate > 0) {
          // Sleep only when more than 1 ms ahead of schedule, then catch up
          // in a burst: one wake-up per document would cost more CPU than
          // sending it.
          int64_t due = start + static_cast<int64_t>(n * 1e9 / per_sender_rate);
          int64_t now = NowNanos();
          if (due > now + 1'000'000)
            std::this_thread::sleep_for(std::chrono::nanoseconds(due - now));
        }
        int64_t t0 = NowNanos();
        int64_t wall = WallNanos();
        memcpy(body.data(), &t0, sizeof(t0));
        memcpy(body.data() + sizeof(t0), &wall, sizeof(wall));
        doc.set_body(body);
        ++n;
        (*stream)->Submit(
            doc, [&, t0](absl::StatusOr<lienthong::SendReceipt> r) {
              if (!r.ok()) {
                if (send_errors.fetch_add(1) < 5)
                  std::cerr << "send: " << r.status() << "\n";
                return;
              }
              int64_t now = NowNanos();
              sent_total.fetch_add(1, std::memory_order_relaxed);
              if (t0 >= measure_start.load() && now <= measure_end.load()) {
                acked_in_window.fetch_add(1, std::memory_order_relaxed);
                absl::MutexLock lock(&local_mu);
                local_send_ack.push_back((now - t0) / 1000);
              }
            });
      }
      absl::Status closed = (*stream)->Close();
      if (!closed.ok())
        std::cerr << "lienthong-bench: close: " << closed << "\n";
      absl::MutexLock lock(&lat.mu);
      absl::MutexLock lock2(&local_mu);
      lat.send_ack_us.insert(lat.send_ack_us.end(), local_send_ack.begin(),
                             local_send_ack.end());
    });
  }

  auto to_ns = [](double s) { return static_cast<int64_t>(s * 1e9); };
  int64_t t_start = NowNanos();
  measure_start = t_start + to_ns(warmup_s);
  measure_end = measure_start + to_ns(duration_s);
  // CPU used inside the measured window, by this process (the SDK's
  // senders and receivers) and by each broker given.
  std::vector<int> cpu_pids = {0};
  cpu_pids.insert(cpu_pids.end(), pids.begin(), pids.end());
  std::vector<double> cpu_before(cpu_pids.size()), cpu_after(cpu_pids.size());
  std::this_thread::sleep_for(std::chrono::nanoseconds(to_ns(warmup_s)));
  for (size_t i = 0; i < cpu_pids.size(); ++i)
    cpu_before[i] = CpuSeconds(cpu_pids[i]);
  std::this_thread::sleep_for(std::chrono::nanoseconds(to_ns(duration_s)));
  for (size_t i = 0; i < cpu_pids.size(); ++i)
    cpu_after[i] = CpuSeconds(cpu_pids[i]);
  stop_sending = true;
  for (auto& t : threads) t.join();
  // Let deliveries of the window drain (bounded).
  for (int i = 0; i < 100 && received_total.load() < sent_total.load(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (auto& s : sessions) s->Stop();

  absl::MutexLock lock(&lat.mu);
  auto ms = [](int64_t us) { return absl::StrFormat("%.2f ms", us / 1000.0); };
  std::printf(
      "lienthong-bench: %d senders, %d receivers, %zu-byte documents, %s, %.0f "
      "s measured\n",
      senders, receivers, size,
      rate > 0 ? absl::StrCat("offered ", rate, "/s").c_str() : "unthrottled",
      duration_s);
  std::printf("  accepted (durable, acked to sender): %10.0f docs/s\n",
              acked_in_window.load() / duration_s);
  std::printf("  end to end (received and acked):     %10.0f docs/s\n",
              received_in_window.load() / duration_s);
  std::printf("  send->ack latency    p50 %s  p99 %s  p99.9 %s\n",
              ms(Percentile(lat.send_ack_us, 0.50)).c_str(),
              ms(Percentile(lat.send_ack_us, 0.99)).c_str(),
              ms(Percentile(lat.send_ack_us, 0.999)).c_str());
  std::printf("  end-to-end latency   p50 %s  p99 %s  p99.9 %s\n",
              ms(Percentile(lat.end_to_end_us, 0.50)).c_str(),
              ms(Percentile(lat.end_to_end_us, 0.99)).c_str(),
              ms(Percentile(lat.end_to_end_us, 0.999)).c_str());
  for (size_t i = 0; i < lat.segment_us.size(); ++i) {
    std::string what = i == 0 ? "sender -> broker 1"
                       : i + 1 == lat.segment_us.size()
                           ? absl::StrCat("broker ", i, " -> receiver")
                           : absl::StrCat("broker ", i, " -> broker ", i + 1);
    std::printf("  %-22s p50 %s  p99 %s\n", what.c_str(),
                ms(Percentile(lat.segment_us[i], 0.50)).c_str(),
                ms(Percentile(lat.segment_us[i], 0.99)).c_str());
  }
  std::printf("  totals: sent %llu, received %llu, send errors %llu\n",
              static_cast<unsigned long long>(sent_total.load()),
              static_cast<unsigned long long>(received_total.load()),
              static_cast<unsigned long long>(send_errors.load()));
  // Per document received in the window; at a steady rate the work of the
  // documents on their way at either end of the window evens out.
  const uint64_t window_docs = received_in_window.load();
  auto per_doc = [&](size_t i) -> std::string {
    if (cpu_before[i] < 0 || cpu_after[i] < 0 || window_docs == 0) return "n/a";
    return absl::StrFormat("%.0f us",
                           (cpu_after[i] - cpu_before[i]) * 1e6 / window_docs);
  };
  std::printf("  CPU per document:     load generator (SDK) %s",
              per_doc(0).c_str());
  for (size_t i = 1; i < cpu_pids.size(); ++i)
    std::printf(", broker %zu %s", i, per_doc(i).c_str());
  std::printf("\n");
  std::printf("  broker peak RSS: %s\n",
              PeakRss(pids.empty() ? 0 : pids[0]).c_str());
  return send_errors.load() == 0 ? 0 : 1;
}
