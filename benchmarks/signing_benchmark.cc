// What signatures cost per document, side by side in one run: one ECDSA
// signature per document against one per batch (over the Merkle root of the
// batch's digests), and the verification a broker or recipient does for
// each. The digest (canonical manifest, SHA-256 of a 1 KiB body) is included
// in every figure, as the SDK and the broker pay it per document.
//
//   BM_SignEach            sign every document on its own
//   BM_SignBatch/N         sign batches of N documents, per document
//   BM_VerifyBatch/N       verify documents of batches of N, each batch
//                          new to the verifier (it checks one ECDSA
//                          signature per batch; the rest is the Merkle
//                          path); N = 1 is a document signed on its own
//
//   build/benchmarks/signing_benchmark --benchmark_counters_tabular=true
// Makes a development PKI (deploy/pki/make-dev-pki.sh) in a temp directory.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "lienthong/signing/signing.h"

#ifndef LIENTHONG_SOURCE_DIR
#error "LIENTHONG_SOURCE_DIR must be defined (benchmarks/CMakeLists.txt)"
#endif

namespace {

using lienthong::signing::DocumentDigest;
using lienthong::signing::SignatureVerifier;
using lienthong::signing::Signer;
using lienthong::v1::Document;
using lienthong::v1::Signature;

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct Keys {
  std::unique_ptr<Signer> signer;
  std::unique_ptr<SignatureVerifier> verifier;
};

// One PKI for the whole run, removed at exit.
const Keys& TheKeys() {
  static const Keys* keys = [] {
    char dir_template[] = "/tmp/lienthong-signing-bench.XXXXXX";
    const std::string dir = mkdtemp(dir_template);
    const std::string cmd = absl::StrCat(
        "/bin/bash '", LIENTHONG_SOURCE_DIR, "/deploy/pki/make-dev-pki.sh' ",
        "--out '", dir, "' --org 000.00.00.H49 >/dev/null");
    if (std::system(cmd.c_str()) != 0) std::abort();
    auto* k = new Keys;
    k->signer = *Signer::FromFiles(dir + "/orgs/000.00.00.H49.pem",
                                   dir + "/orgs/000.00.00.H49.key");
    lienthong::signing::VerifierOptions v;
    v.trust_root_pem = Read(dir + "/ca.pem");
    v.trust_domain = "lienthong.local";
    k->verifier = *SignatureVerifier::Create(std::move(v));
    std::system(absl::StrCat("rm -rf '", dir, "'").c_str());
    return k;
  }();
  return *keys;
}

Document NewDocument(int i) {
  Document d;
  d.set_idempotency_key(absl::StrCat("bench-", i));
  d.set_sender("000.00.00.H49");
  d.add_recipients("000.00.00.G22");
  d.mutable_metadata()->set_subject(absl::StrCat("Công văn số ", i));
  d.set_body(std::string(1024, 'x'));
  return d;
}

std::vector<Document> Documents(int n) {
  std::vector<Document> docs;
  for (int i = 0; i < n; ++i) docs.push_back(NewDocument(i));
  return docs;
}

void BM_SignEach(benchmark::State& state) {
  const Keys& keys = TheKeys();
  std::vector<Document> docs = Documents(256);
  size_t i = 0;
  for (auto _ : state) {
    Document& d = docs[i++ % docs.size()];
    benchmark::DoNotOptimize(keys.signer->Sign(DocumentDigest(d), absl::Now()));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SignEach);

void BM_SignBatch(benchmark::State& state) {
  const Keys& keys = TheKeys();
  const int n = static_cast<int>(state.range(0));
  std::vector<Document> docs = Documents(n);
  for (auto _ : state) {
    std::vector<std::string> digests;
    digests.reserve(n);
    for (const Document& d : docs) digests.push_back(DocumentDigest(d));
    benchmark::DoNotOptimize(keys.signer->SignBatch(digests, absl::Now()));
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_SignBatch)->Arg(16)->Arg(256);

void BM_VerifyBatch(benchmark::State& state) {
  const Keys& keys = TheKeys();
  const int n = static_cast<int>(state.range(0));
  // A fresh batch each time, as a broker sees them: nothing cached.
  int round = 0;
  for (auto _ : state) {
    state.PauseTiming();
    std::vector<Document> docs = Documents(n);
    for (Document& d : docs) {
      d.set_idempotency_key(
          absl::StrCat("round-", round, "-", d.idempotency_key()));
    }
    ++round;
    std::vector<std::string> digests;
    for (const Document& d : docs) digests.push_back(DocumentDigest(d));
    std::vector<Signature> sigs = *keys.signer->SignBatch(digests, absl::Now());
    for (int i = 0; i < n; ++i) *docs[i].mutable_signature() = sigs[i];
    state.ResumeTiming();
    for (const Document& d : docs) {
      auto who = lienthong::signing::VerifyDocumentSignature(*keys.verifier, d,
                                                             std::nullopt);
      if (!who.ok()) state.SkipWithError("a signature did not verify");
      benchmark::DoNotOptimize(who);
    }
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_VerifyBatch)->Arg(1)->Arg(16)->Arg(256);

}  // namespace

BENCHMARK_MAIN();
