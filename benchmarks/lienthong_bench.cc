// lienthong-bench: load generator against a running broker over mutual TLS.
//
//   lienthong-bench --endpoint 127.0.0.1:7443 --pki pki --senders 4
//       --receivers 2 --duration 10 --size 1024 [--rate 15000]
//       [--broker-pid PID] [--receive-endpoint 127.0.0.1:7444]
//
// Senders pipeline 1 KiB documents on SendStreams (every acknowledgement means
// the document is durable: WAL synced); receivers take them on Receive
// streams and acknowledge each. Prints documents/s end to end (accepted,
// delivered and acknowledged inside the measured window), p50/p99/p99.9 of
// send→ack and send→receive latency, and the broker's peak RSS.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "lienthong/client.h"

namespace {

using Clock = std::chrono::steady_clock;

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             Clock::now().time_since_epoch())
      .count();
}

struct Latencies {
  absl::Mutex mu;
  std::vector<int64_t> send_ack_us;
  std::vector<int64_t> end_to_end_us;
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

lienthong::ClientOptions OptionsFor(const std::string& pki,
                                    const std::string& endpoint,
                                    const std::string& org) {
  lienthong::ClientOptions o;
  o.endpoints = {endpoint};
  o.ca_file = pki + "/ca.pem";
  o.certificate_file = pki + "/orgs/" + org + ".pem";
  o.private_key_file = pki + "/orgs/" + org + ".key";
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lienthong-bench: end-to-end load against a running broker"};
  std::string endpoint = "127.0.0.1:7443", pki = "pki";
  int senders = 4, receivers = 2, pid = 0;
  double duration_s = 10, warmup_s = 2, rate = 0;
  size_t size = 1024, window = 2048;
  std::vector<std::string> sender_orgs = {"000.00.00.H49", "000.00.00.H50",
                                          "000.01.23.H49"};
  std::string recipient = "000.00.00.G22";
  app.add_option("--endpoint", endpoint, "broker host:port");
  app.add_option("--pki", pki,
                 "dev PKI directory (deploy/pki/make-dev-pki.sh)");
  app.add_option("--senders", senders,
                 "sender streams (each its own connection)");
  app.add_option("--receivers", receivers,
                 "receive streams for the recipient org");
  app.add_option("--duration", duration_s, "measured seconds");
  app.add_option("--warmup", warmup_s, "seconds before measuring");
  app.add_option("--size", size, "body bytes per document");
  app.add_option("--rate", rate,
                 "total documents/s to offer (0 = as fast as possible)");
  app.add_option("--window", window, "unacknowledged sends per sender stream");
  app.add_option("--broker-pid", pid, "read the broker's peak RSS from /proc");
  app.add_option("--sender-org", sender_orgs, "sending organizations (cycled)");
  app.add_option("--recipient", recipient, "receiving organization");
  std::string receive_endpoint;
  app.add_option("--receive-endpoint", receive_endpoint,
                 "broker the recipient takes documents from (default: "
                 "--endpoint); another broker of a federation measures the "
                 "hops between them");
  CLI11_PARSE(app, argc, argv);
  if (receive_endpoint.empty()) receive_endpoint = endpoint;
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

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
                  int64_t sent = 0;
                  const std::string& body = in.document.body();
                  if (body.size() >= sizeof(sent))
                    memcpy(&sent, body.data(), sizeof(sent));
                  received_total.fetch_add(1, std::memory_order_relaxed);
                  if (sent >= measure_start.load() &&
                      now <= measure_end.load()) {
                    received_in_window.fetch_add(1, std::memory_order_relaxed);
                    absl::MutexLock lock(&lat.mu);
                    lat.end_to_end_us.push_back((now - sent) / 1000);
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

  std::vector<std::thread> threads;
  for (int i = 0; i < senders; ++i) {
    threads.emplace_back([&, i] {
      auto client = lienthong::Client::Open(
          OptionsFor(pki, endpoint, sender_orgs[i % sender_orgs.size()]));
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
      std::string body(std::max<size_t>(size, 8), 'x');
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
        memcpy(body.data(), &t0, sizeof(t0));
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
  std::this_thread::sleep_for(
      std::chrono::nanoseconds(to_ns(warmup_s + duration_s)));
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
  std::printf("  totals: sent %llu, received %llu, send errors %llu\n",
              static_cast<unsigned long long>(sent_total.load()),
              static_cast<unsigned long long>(received_total.load()),
              static_cast<unsigned long long>(send_errors.load()));
  std::printf("  broker peak RSS: %s\n", PeakRss(pid).c_str());
  return send_errors.load() == 0 ? 0 : 1;
}
