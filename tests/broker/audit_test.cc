// The audit log against the memory and the RocksDB store: appends chain,
// checkpoints sign, and verification names the entry that was edited,
// removed or reordered, a truncated log and a forged checkpoint. Tampering
// goes through the key-value engine under the store, as someone with the
// data directory (and without the broker's key) could.
#include "lienthong/broker/audit.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/src/keys.h"
#include "storage/src/kv_engine.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace lienthong::broker {
namespace {

using ::lienthong::testing_util::StatusIs;
using ::lienthong::testing_util::TempDir;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr char kBroker[] = "spiffe://lienthong.local/broker/central";

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// One development PKI (and a second, foreign one) for the whole binary.
TempDir* pki = nullptr;
TempDir* foreign_pki = nullptr;

class Environment : public ::testing::Environment {
 public:
  void SetUp() override {
    pki = new TempDir();
    foreign_pki = new TempDir();
    for (TempDir* dir : {pki, foreign_pki}) {
      const std::string cmd =
          absl::StrCat("/bin/bash '", LIENTHONG_SOURCE_DIR,
                       "/deploy/pki/make-dev-pki.sh' --out '", dir->path(),
                       "' --org 000.00.00.H49 >/dev/null");
      ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    }
  }
  void TearDown() override {
    delete pki;
    delete foreign_pki;
  }
};
const auto* const kEnvironment =
    ::testing::AddGlobalTestEnvironment(new Environment);

std::shared_ptr<const audit::CheckpointSigner> Signer(TempDir* dir) {
  auto signer = audit::CheckpointSigner::FromPem(
      Read(absl::StrCat(dir->path(), "/brokers/central.pem")),
      Read(absl::StrCat(dir->path(), "/brokers/central.key")));
  EXPECT_TRUE(signer.ok()) << signer.status();
  return signer.ok() ? std::shared_ptr<const audit::CheckpointSigner>(
                           std::move(signer).value())
                     : nullptr;
}

v1::AuditEntry Entry(int i) {
  v1::AuditEntry e;
  e.set_kind(v1::AUDIT_KIND_SEND_ACCEPTED);
  e.set_actor("spiffe://lienthong.local/org/000.00.00.H49");
  e.set_document_id(absl::StrCat("doc-", i));
  e.set_org("000.00.00.G22");
  e.set_outcome("OK");
  return e;
}

enum class Engine { kMemory, kRocksDb };

class AuditLogTest : public ::testing::TestWithParam<Engine> {
 protected:
  void SetUp() override {
    options_.broker_id = kBroker;
    options_.signer = Signer(pki);
    options_.trust_root_pem = Read(absl::StrCat(pki->path(), "/ca.pem"));
    options_.checkpoint_every = 1000000;  // tests checkpoint explicitly
    options_.checkpoint_interval = absl::Hours(1);
    OpenStore();
    OpenLog();
  }

  void OpenStore() {
    std::unique_ptr<storage::KvEngine> engine;
    if (GetParam() == Engine::kMemory) {
      if (!memory_engine_owner_) {
        memory_engine_owner_ = storage::NewMemoryEngine().release();
      }
      return OpenOver(memory_engine_owner_);
    }
    ASSERT_OK_AND_ASSIGN(engine, storage::OpenRocksDbEngine(RocksOptions()));
    ASSERT_OK_AND_ASSIGN(store_, storage::NewStoreOverEngine(
                                     std::move(engine), 4096, 32 << 20, {}));
  }

  // The memory engine outlives its stores here, so a test can reopen.
  void OpenOver(storage::KvEngine* engine) {
    class Borrowed : public storage::KvEngine {
     public:
      explicit Borrowed(storage::KvEngine* e) : e_(e) {}
      absl::StatusOr<std::optional<std::string>> Get(
          storage::Cf cf, absl::string_view key) override {
        return e_->Get(cf, key);
      }
      absl::StatusOr<std::optional<std::string>> GetLatest(
          storage::Cf cf, absl::string_view key) override {
        return e_->GetLatest(cf, key);
      }
      absl::Status Commit(const std::vector<storage::KvOp>& ops,
                          size_t bytes) override {
        return e_->Commit(ops, bytes);
      }
      absl::Status Sync(bool durable,
                        const std::function<bool()>& may_show) override {
        return e_->Sync(durable, may_show);
      }
      absl::Status Scan(
          storage::Cf cf, absl::string_view start, absl::string_view prefix,
          const std::function<bool(absl::string_view, absl::string_view)>& fn)
          override {
        return e_->Scan(cf, start, prefix, fn);
      }
      std::pair<uint64_t, uint64_t> ApproximateSizes() override {
        return e_->ApproximateSizes();
      }

     private:
      storage::KvEngine* e_;
    };
    ASSERT_OK_AND_ASSIGN(
        store_, storage::NewStoreOverEngine(std::make_unique<Borrowed>(engine),
                                            4096, 32 << 20, {}));
  }

  storage::RocksDbOptions RocksOptions() {
    storage::RocksDbOptions o;
    o.path = dir_.path();
    return o;
  }

  void OpenLog() {
    ASSERT_OK_AND_ASSIGN(log_, AuditLog::Open(options_, store_.get()));
  }

  void TearDown() override {
    log_.reset();
    store_.reset();
    delete memory_engine_owner_;
  }

  void AppendSync(int n) {
    for (int i = 0; i < n; ++i) {
      storage::WriteBatch batch;
      log_->AddTo(&batch, Entry(++appended_));
      ASSERT_OK(store_->WriteSync(std::move(batch)).status());
    }
  }

  // Closes the log and the store, changes the engine underneath as
  // `tamper` says, and opens them again.
  void Tamper(const std::function<void(storage::KvEngine&)>& tamper) {
    log_.reset();  // writes its closing checkpoint
    store_.reset();
    if (GetParam() == Engine::kMemory) {
      tamper(*memory_engine_owner_);
      ASSERT_OK(memory_engine_owner_->Sync(true));
    } else {
      ASSERT_OK_AND_ASSIGN(auto engine,
                           storage::OpenRocksDbEngine(RocksOptions()));
      tamper(*engine);
      ASSERT_OK(engine->Sync(true));
    }
    OpenStore();
    OpenLog();
  }

  static std::string Get(storage::KvEngine& e, const std::string& key) {
    auto v = e.GetLatest(storage::Cf::kAudit, key);
    EXPECT_TRUE(v.ok() && *v) << key;
    return v.ok() && *v ? **v : "";
  }
  static void Put(storage::KvEngine& e, const std::string& key,
                  const std::string& value) {
    ASSERT_OK(e.Commit({{storage::Cf::kAudit, false, key, value}}, 0));
  }
  static void Erase(storage::KvEngine& e, const std::string& key) {
    ASSERT_OK(e.Commit({{storage::Cf::kAudit, true, key, {}}}, 0));
  }
  static std::string EntryKey(uint64_t i) {
    return storage::keys::Audit(storage::keys::kAuditEntryTag, i);
  }
  static std::string CheckpointKey(uint64_t i) {
    return storage::keys::Audit(storage::keys::kAuditCheckpointTag, i);
  }

  audit::AuditVerification Verify() {
    absl::StatusOr<audit::AuditVerification> v = log_->Verify();
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? *v : audit::AuditVerification{};
  }

  TempDir dir_;
  AuditOptions options_;
  storage::KvEngine* memory_engine_owner_ = nullptr;
  std::unique_ptr<storage::Store> store_;
  std::unique_ptr<AuditLog> log_;
  int appended_ = 0;
};

TEST_P(AuditLogTest, AppendsChainAndCheckpointsVerify) {
  AppendSync(5);
  ASSERT_OK_AND_ASSIGN(v1::AuditCheckpoint c, log_->Checkpoint());
  EXPECT_EQ(c.tree_size(), 5u);
  EXPECT_OK(audit::VerifyCheckpointSignature(c, options_.trust_root_pem));
  AppendSync(3);
  // The entries of a batch are appended by its own write, in order.
  storage::WriteBatch batch;
  log_->AddTo(&batch, Entry(100));
  log_->AddTo(&batch, Entry(101));
  ASSERT_OK_AND_ASSIGN(storage::WriteResult r,
                       store_->WriteSync(std::move(batch)));
  EXPECT_EQ(r.first_audit_index, 9u);
  audit::AuditVerification v = Verify();
  EXPECT_THAT(v.problems, IsEmpty());
  EXPECT_EQ(v.entries, 10u);
  EXPECT_EQ(v.checkpoints, 1u);
  EXPECT_EQ(v.verified_size, 5u);
  EXPECT_EQ(v.head_hash, store_->GetAuditHead().hash);

  // The chain continues across a restart, with the closing checkpoint.
  Tamper([](storage::KvEngine&) {});
  AppendSync(2);
  v = Verify();
  EXPECT_THAT(v.problems, IsEmpty());
  EXPECT_EQ(v.entries, 12u);
  EXPECT_EQ(v.checkpoints, 2u);
  EXPECT_EQ(v.verified_size, 10u);
}

TEST_P(AuditLogTest, DuplicateBatchAppendsNothing) {
  storage::WriteBatch batch;
  batch.guard = storage::Guard{"\x01test\0key", "x"};
  log_->AddTo(&batch, Entry(1));
  ASSERT_OK(store_->WriteSync(batch).status());
  ASSERT_OK_AND_ASSIGN(storage::WriteResult again,
                       store_->WriteSync(std::move(batch)));
  EXPECT_TRUE(again.duplicate_of.has_value());
  EXPECT_EQ(store_->GetAuditHead().size, 1u);
}

TEST_P(AuditLogTest, OneFlippedByteIsNamed) {
  AppendSync(10);
  ASSERT_OK(log_->Checkpoint().status());
  Tamper([](storage::KvEngine& e) {
    v1::StoredAuditEntry s;
    ASSERT_TRUE(s.ParseFromString(Get(e, EntryKey(4))));
    std::string entry = s.entry();
    entry[entry.size() - 1] ^= 0x01;  // one byte of the entry's content
    s.set_entry(entry);
    Put(e, EntryKey(4), s.SerializeAsString());
  });
  audit::AuditVerification v = Verify();
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.first_bad_index, 4u);
  EXPECT_THAT(v.problems[0], HasSubstr("entry 4: its content does not match"));
}

TEST_P(AuditLogTest, ARewrittenChainTailFailsItsCheckpoint) {
  AppendSync(6);
  ASSERT_OK(log_->Checkpoint().status());
  // Entry 3 edited and every hash from it on recomputed, head record too:
  // only the signed checkpoint can tell.
  Tamper([](storage::KvEngine& e) {
    std::string prev;
    {
      v1::StoredAuditEntry s;
      ASSERT_TRUE(s.ParseFromString(Get(e, EntryKey(2))));
      prev = s.hash();
    }
    for (uint64_t i = 3; i <= 6; ++i) {
      v1::StoredAuditEntry s;
      ASSERT_TRUE(s.ParseFromString(Get(e, EntryKey(i))));
      if (i == 3) {
        v1::AuditEntry a;
        ASSERT_TRUE(a.ParseFromString(s.entry()));
        a.set_detail("nothing happened");
        s.set_entry(a.SerializeAsString());
      }
      s.set_hash(audit::AuditChainHash(prev, i, s.entry()));
      prev = s.hash();
      Put(e, EntryKey(i), s.SerializeAsString());
    }
    std::string head;
    storage::keys::AppendBigEndian64(&head, 6);
    head += prev;
    ASSERT_OK(e.Commit(
        {{storage::Cf::kMeta, false, storage::keys::kAuditHead, head}}, 0));
  });
  audit::AuditVerification v = Verify();
  ASSERT_FALSE(v.ok());
  EXPECT_THAT(v.problems[0], HasSubstr("checkpoint at size 6: the signed head "
                                       "does not match"));
}

TEST_P(AuditLogTest, ARemovedEntryIsNamed) {
  AppendSync(8);
  Tamper([](storage::KvEngine& e) { Erase(e, EntryKey(5)); });
  audit::AuditVerification v = Verify();
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.first_bad_index, 5u);
  EXPECT_THAT(v.problems[0], HasSubstr("entry 5: missing (removed)"));
}

TEST_P(AuditLogTest, ATruncatedLogIsDetected) {
  AppendSync(8);
  ASSERT_OK(log_->Checkpoint().status());
  // The tail after a checkpoint cut, head record rewritten to match.
  Tamper([](storage::KvEngine& e) {
    std::string hash5;
    {
      v1::StoredAuditEntry s;
      ASSERT_TRUE(s.ParseFromString(Get(e, EntryKey(5))));
      hash5 = s.hash();
    }
    for (uint64_t i = 6; i <= 8; ++i) Erase(e, EntryKey(i));
    std::string head;
    storage::keys::AppendBigEndian64(&head, 5);
    head += hash5;
    ASSERT_OK(e.Commit(
        {{storage::Cf::kMeta, false, storage::keys::kAuditHead, head}}, 0));
  });
  audit::AuditVerification v = Verify();
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.first_bad_index, 6u);
  EXPECT_THAT(v.problems[0],
              HasSubstr("checkpoint at size 8 is signed, but the log ends at "
                        "entry 5"));
  EXPECT_THAT(v.problems[0], HasSubstr("(truncated)"));
}

TEST_P(AuditLogTest, ATruncatedTailWithoutCheckpointFailsTheHeadRecord) {
  AppendSync(4);
  Tamper([](storage::KvEngine& e) {
    Erase(e, EntryKey(4));
    // The closing checkpoint signed size 4: that catches it too.
    Erase(e, CheckpointKey(4));
  });
  audit::AuditVerification v = Verify();
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.first_bad_index, 4u);
  EXPECT_THAT(v.problems[0], HasSubstr("the head record counts 4 entries, but "
                                       "the log ends at entry 3"));
}

TEST_P(AuditLogTest, ReorderedEntriesAreNamed) {
  AppendSync(6);
  Tamper([](storage::KvEngine& e) {
    const std::string a = Get(e, EntryKey(2)), b = Get(e, EntryKey(3));
    Put(e, EntryKey(2), b);
    Put(e, EntryKey(3), a);
  });
  audit::AuditVerification v = Verify();
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.first_bad_index, 2u);
  EXPECT_THAT(v.problems[0], HasSubstr("entry at position 2 is entry 3"));
}

TEST_P(AuditLogTest, AForgedCheckpointIsDetected) {
  AppendSync(3);
  ASSERT_OK(log_->Checkpoint().status());
  Tamper([](storage::KvEngine& e) {
    v1::AuditCheckpoint c;
    ASSERT_TRUE(c.ParseFromString(Get(e, CheckpointKey(3))));
    std::string sig = c.signature();
    sig[sig.size() / 2] ^= 0x40;
    c.set_signature(sig);
    Put(e, CheckpointKey(3), c.SerializeAsString());
  });
  audit::AuditVerification v = Verify();
  ASSERT_FALSE(v.ok());
  EXPECT_THAT(v.problems[0], HasSubstr("checkpoint at size 3: bad signature"));
}

TEST_P(AuditLogTest, ACheckpointFromAnotherCaIsRefused) {
  AppendSync(2);
  // Signed with a key of the same name under a foreign CA, e.g. by someone
  // who rewrote the whole log and holds a key of their own.
  options_.signer = Signer(foreign_pki);
  log_.reset();
  OpenLog();
  AppendSync(1);
  ASSERT_OK(log_->Checkpoint().status());
  audit::AuditVerification v = Verify();
  ASSERT_FALSE(v.ok());
  EXPECT_THAT(v.problems[0], HasSubstr("does not chain to the trust root"));
}

TEST_P(AuditLogTest, CheckpointsEveryNEntries) {
  options_.checkpoint_every = 4;
  log_.reset();
  OpenLog();
  // The checkpoint thread wakes when 4 entries were staged since its last
  // checkpoint and signs what is there by then (on a loaded machine that
  // may be more than 4): each round of 4 entries gets a checkpoint.
  auto checkpoints = [&] {
    int found = 0;
    EXPECT_OK(store_->ScanAuditCheckpoints(0, [&](uint64_t, absl::string_view) {
      ++found;
      return true;
    }));
    return found;
  };
  auto await = [&](int want) {
    for (int i = 0; i < 400 && checkpoints() < want; ++i)  // up to 20 s
      absl::SleepFor(absl::Milliseconds(50));
    return checkpoints();
  };
  AppendSync(3);
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(checkpoints(), 0) << "a checkpoint before 4 entries";
  AppendSync(1);
  EXPECT_EQ(await(1), 1);
  AppendSync(4);
  EXPECT_EQ(await(2), 2);
  EXPECT_THAT(Verify().problems, IsEmpty());
}

TEST(AuditOptionsTest, BadOptionsNameTheField) {
  AuditOptions o;
  EXPECT_THAT(o.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(std::string(o.Validate().message()), HasSubstr("broker_id"));
  o.broker_id = kBroker;
  o.signer = Signer(pki);
  o.checkpoint_every = 0;
  EXPECT_THAT(std::string(o.Validate().message()),
              HasSubstr("checkpoint_every"));
}

TEST(CheckpointSignerTest, RefusesAKeyThatIsNotTheCertificates) {
  auto signer = audit::CheckpointSigner::FromPem(
      Read(absl::StrCat(pki->path(), "/brokers/central.pem")),
      Read(absl::StrCat(foreign_pki->path(), "/brokers/central.key")));
  EXPECT_THAT(signer.status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(std::string(signer.status().message()),
              HasSubstr("not the key of the signing certificate"));
}

INSTANTIATE_TEST_SUITE_P(Engines, AuditLogTest,
                         ::testing::Values(Engine::kMemory, Engine::kRocksDb),
                         [](const auto& info) {
                           return info.param == Engine::kMemory ? "Memory"
                                                                : "RocksDb";
                         });

}  // namespace
}  // namespace lienthong::broker
