// Encryption at rest with real RocksDB: what a copied data directory shows
// without the master key, key rotation while serving, master key rotation,
// and a sealed value moved to another document.
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lienthong/audit/chain.h"
#include "lienthong/common/sealing.h"
#include "lienthong/storage/store.h"
#include "rocksdb/db.h"
#include "storage/src/keys.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace lienthong::storage {
namespace {

using ::lienthong::testing_util::DirectoryContains;
using ::lienthong::testing_util::StatusIs;
using ::lienthong::testing_util::TempDir;
using ::testing::HasSubstr;

constexpr char kMarker[] = "QUYET-DINH-NHAN-SU-9e1f";

v1::Document MakeDocument(const std::string& id, const std::string& text) {
  v1::Document doc;
  doc.set_id(id);
  doc.set_sender("000.00.00.H49");
  doc.set_idempotency_key(absl::StrCat("key-", id));
  doc.add_recipients("000.00.00.G22");
  doc.mutable_metadata()->set_subject(absl::StrCat("Trích yếu ", text));
  doc.set_body(absl::StrCat("Nội dung ", text));
  v1::Attachment* a = doc.add_attachments();
  a->set_name("phu-luc.txt");
  a->set_content(absl::StrCat("Phụ lục ", text));
  return doc;
}

// The store's RocksDB opened directly, as someone with write access to the
// files but not the key would: every column family, by name.
struct RawDb {
  explicit RawDb(const std::string& path) {
    rocksdb::DBOptions options;
    EXPECT_TRUE(rocksdb::DB::ListColumnFamilies(options, path, &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (const std::string& n : names)
      families.emplace_back(n, rocksdb::ColumnFamilyOptions());
    rocksdb::DB* opened = nullptr;
    EXPECT_TRUE(
        rocksdb::DB::Open(options, path, families, &handles, &opened).ok());
    db.reset(opened);
  }
  ~RawDb() {
    for (rocksdb::ColumnFamilyHandle* h : handles)
      EXPECT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
  }
  // nullptr when there is none of that name.
  rocksdb::ColumnFamilyHandle* Family(const std::string& name) const {
    for (size_t i = 0; i < names.size() && i < handles.size(); ++i)
      if (names[i] == name) return handles[i];
    return nullptr;
  }

  std::vector<std::string> names;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  std::unique_ptr<rocksdb::DB> db;
};

class EncryptionTest : public ::testing::Test {
 protected:
  absl::StatusOr<std::unique_ptr<Store>> Open(EncryptionOptions encryption) {
    RocksDbOptions options;
    options.path = dir_.path() + "/db";
    options.encryption = std::move(encryption);
    return OpenRocksDbStore(options);
  }
  static EncryptionOptions With(std::string master,
                                std::vector<std::string> previous = {}) {
    EncryptionOptions e;
    e.master_key = std::move(master);
    e.previous_master_keys = std::move(previous);
    return e;
  }
  static absl::Status Put(Store& store, const v1::Document& doc) {
    WriteBatch batch;
    batch.document = std::make_shared<v1::Document>(doc);
    return store.WriteSync(std::move(batch)).status();
  }
  static void ExpectReads(Store& store, const std::string& id,
                          const std::string& text) {
    absl::StatusOr<v1::Document> doc = store.GetDocument(id);
    ASSERT_OK(doc);
    EXPECT_EQ(doc->body(), absl::StrCat("Nội dung ", text));
    EXPECT_EQ(doc->attachments(0).content(), absl::StrCat("Phụ lục ", text));
  }

  TempDir dir_;
  const std::string master_ = sealing::RandomKey();
  const std::string next_master_ = sealing::RandomKey();
};

TEST_F(EncryptionTest, ACopiedDataDirectoryShowsNoContentWithoutTheKey) {
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open(With(master_)));
    EXPECT_TRUE(store->Encryption().enabled);
    ASSERT_OK(Put(*store, MakeDocument("doc-1", kMarker)));
    ExpectReads(*store, "doc-1", kMarker);
  }
  // Neither the WAL nor the tables hold any of its text.
  EXPECT_FALSE(DirectoryContains(dir_.path(), kMarker));
  EXPECT_FALSE(DirectoryContains(dir_.path(), "Nội dung"));
  // Without the key the store does not open; with it everything reads.
  EXPECT_THAT(Open({}).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("storage.master_key_file")));
  EXPECT_THAT(Open(With(sealing::RandomKey())).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("not configured")));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open(With(master_)));
  ExpectReads(*store, "doc-1", kMarker);
}

TEST_F(EncryptionTest, TheControlWithoutEncryptionShowsTheText) {
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open({}));
    EXPECT_FALSE(store->Encryption().enabled);
    ASSERT_OK(Put(*store, MakeDocument("doc-1", kMarker)));
  }
  EXPECT_TRUE(DirectoryContains(dir_.path(), kMarker));
  // Turning encryption on later: the old document still reads, new ones are
  // sealed.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open(With(master_)));
  ExpectReads(*store, "doc-1", kMarker);
  ASSERT_OK(Put(*store, MakeDocument("doc-2", "second")));
  ExpectReads(*store, "doc-2", "second");
}

TEST_F(EncryptionTest, RotationWhileServingKeepsEveryDocumentReadable) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open(With(master_)));
  ASSERT_OK(Put(*store, MakeDocument("doc-1", "one")));
  const EncryptionInfo before = store->Encryption();
  // A new data key and a new master key, without closing the store.
  ASSERT_OK(store->RotateKeys(With(next_master_)));
  const EncryptionInfo after = store->Encryption();
  EXPECT_NE(after.data_key_id, before.data_key_id);
  EXPECT_NE(after.master_key_id, before.master_key_id);
  EXPECT_EQ(after.data_keys, 2u);
  ASSERT_OK(Put(*store, MakeDocument("doc-2", "two")));
  ExpectReads(*store, "doc-1", "one");
  ExpectReads(*store, "doc-2", "two");
  EXPECT_THAT(store->RotateKeys(With("short")),
              StatusIs(absl::StatusCode::kInvalidArgument));
  store.reset();
  // Every data key is wrapped by the new master key now; the old one alone
  // opens nothing.
  EXPECT_THAT(Open(With(master_)).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_OK_AND_ASSIGN(store, Open(With(next_master_)));
  ExpectReads(*store, "doc-1", "one");
  ExpectReads(*store, "doc-2", "two");
}

TEST_F(EncryptionTest, APreviousMasterKeyIsReplacedWhenTheStoreOpens) {
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open(With(master_)));
    ASSERT_OK(Put(*store, MakeDocument("doc-1", "one")));
  }
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                         Open(With(next_master_, {master_})));
    ExpectReads(*store, "doc-1", "one");
  }
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open(With(next_master_)));
  ExpectReads(*store, "doc-1", "one");
}

TEST_F(EncryptionTest, ASealedValueMovedToAnotherDocumentDoesNotOpen) {
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open(With(master_)));
    ASSERT_OK(Put(*store, MakeDocument("doc-a", "a")));
    ASSERT_OK(Put(*store, MakeDocument("doc-b", "b")));
  }
  {
    // Someone with write access to the files, but not the key, swaps them.
    RawDb raw(dir_.path() + "/db");
    rocksdb::ColumnFamilyHandle* documents = raw.Family("documents");
    ASSERT_NE(documents, nullptr);
    std::string a;
    ASSERT_TRUE(
        raw.db->Get(rocksdb::ReadOptions(), documents, "doc-a", &a).ok());
    EXPECT_EQ(a.find("Nội dung"), std::string::npos);
    ASSERT_TRUE(
        raw.db->Put(rocksdb::WriteOptions(), documents, "doc-b", a).ok());
  }
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open(With(master_)));
  ExpectReads(*store, "doc-a", "a");
  EXPECT_THAT(store->GetDocument("doc-b").status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("doc-b")));
}

// A document's status events, audit entries, queue payloads (events going
// back to a peer) and records (a copy held for approval, with its metadata)
// carry text of their own (a rejection's reason, an approval's comment, a
// subject): sealed at rest too, read back whole, and the audit chain still
// hashes the entries themselves.
TEST_F(EncryptionTest, EventsAuditEntriesQueuePayloadsAndRecordsAreSealedToo) {
  constexpr char kReason[] = "TU-CHOI-THIEU-CHU-KY-41c7";
  constexpr char kComment[] = "Y-KIEN-PHE-DUYET-77ad";
  constexpr char kPayload[] = "SU-KIEN-TRA-VE-5b02";
  constexpr char kHeld[] = "TRICH-YEU-CHO-DUYET-c3e9";
  auto write = [&](Store& store) {
    WriteBatch batch;
    batch.document =
        std::make_shared<v1::Document>(MakeDocument("doc-1", "one"));
    v1::StatusEvent e;
    e.set_document_id("doc-1");
    e.set_recipient("000.00.00.G22");
    e.set_sender("000.00.00.H49");
    e.set_business_status(v1::BUSINESS_STATUS_REJECTED);
    e.set_reason(kReason);
    batch.events.push_back(e);
    v1::AuditEntry a;
    a.set_kind(v1::AUDIT_KIND_APPROVAL);
    a.set_document_id("doc-1");
    a.set_detail(kComment);
    batch.audit.push_back(a);
    // An event waiting to go back to a peer rides in its queue entry.
    batch.enqueue.push_back(
        Enqueue{"~peer", 0, "doc-1", "000.00.00.H49", kPayload});
    // A record, such as a copy held for approval with its metadata.
    batch.records.push_back(Record{"held/doc-1", kHeld});
    return store.WriteSync(std::move(batch)).status();
  };
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open(With(master_)));
    ASSERT_OK(write(*store));
  }
  EXPECT_FALSE(DirectoryContains(dir_.path(), kReason));
  EXPECT_FALSE(DirectoryContains(dir_.path(), kComment));
  EXPECT_FALSE(DirectoryContains(dir_.path(), kPayload));
  EXPECT_FALSE(DirectoryContains(dir_.path(), kHeld));

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open(With(master_)));
  ASSERT_OK_AND_ASSIGN(std::vector<v1::StatusEvent> events,
                       store->ListDocumentEvents("doc-1", 0));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].reason(), kReason);
  ASSERT_OK_AND_ASSIGN(events, store->ListSenderEvents("000.00.00.H49", 0, 10));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].reason(), kReason);
  auto expect_entry = [&](absl::string_view raw) {
    v1::StoredAuditEntry stored;
    ASSERT_TRUE(stored.ParseFromArray(raw.data(), raw.size()));
    v1::AuditEntry a;
    ASSERT_TRUE(a.ParseFromString(stored.entry()));
    EXPECT_EQ(a.detail(), kComment);
    EXPECT_EQ(stored.hash(),
              audit::AuditChainHash(std::string(32, '\0'), 1, stored.entry()));
    EXPECT_EQ(stored.hash(), store->GetAuditHead().hash);
  };
  int seen = 0;
  ASSERT_OK(store->ScanAuditEntries(1, [&](uint64_t, absl::string_view raw) {
    expect_entry(raw);
    ++seen;
    return true;
  }));
  ASSERT_OK(store->ScanAuditEntriesForDocument(
      "doc-1", [&](uint64_t, absl::string_view raw) {
        expect_entry(raw);
        ++seen;
        return true;
      }));
  EXPECT_EQ(seen, 2);
  std::vector<std::string> payloads;
  ASSERT_OK(store->ScanQueues(
      [&](const QueueEntry& q) { payloads.push_back(q.payload); }));
  EXPECT_THAT(payloads, ::testing::ElementsAre(kPayload));
  ASSERT_OK_AND_ASSIGN(std::optional<std::string> held,
                       store->GetRecord("held/doc-1"));
  EXPECT_EQ(held, kHeld);
  std::vector<std::string> records;
  ASSERT_OK(store->ScanRecords(
      "held/", [&](const Record& r) { records.push_back(r.value); }));
  EXPECT_THAT(records, ::testing::ElementsAre(kHeld));

  // The control: without encryption both texts are on disk.
  TempDir plain;
  {
    RocksDbOptions options;
    options.path = plain.path() + "/db";
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> clear,
                         OpenRocksDbStore(options));
    ASSERT_OK(write(*clear));
  }
  EXPECT_TRUE(DirectoryContains(plain.path(), kReason));
  EXPECT_TRUE(DirectoryContains(plain.path(), kComment));
  EXPECT_TRUE(DirectoryContains(plain.path(), kPayload));
  EXPECT_TRUE(DirectoryContains(plain.path(), kHeld));
}

// An audit entry whose sealed bytes were altered on disk: the log's scan
// hands it on as stored (verification names it by its hash), but a
// document's entries, which leave the broker as evidence, fail naming it
// rather than going out sealed.
TEST_F(EncryptionTest, AnAuditEntryThatDoesNotOpenIsNamedNotExported) {
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open(With(master_)));
    for (const char* detail : {"first", "second"}) {
      WriteBatch batch;
      v1::AuditEntry a;
      a.set_kind(v1::AUDIT_KIND_APPROVAL);
      a.set_document_id("doc-1");
      a.set_detail(detail);
      batch.audit.push_back(a);
      ASSERT_OK(store->WriteSync(std::move(batch)).status());
    }
  }
  std::string altered;  // entry 1 as stored after the change
  {
    // Someone with write access to the files changes a byte of entry 1.
    RawDb raw(dir_.path() + "/db");
    rocksdb::ColumnFamilyHandle* audit = raw.Family("audit");
    ASSERT_NE(audit, nullptr);
    const std::string key = keys::Audit(keys::kAuditEntryTag, 1);
    std::string value;
    ASSERT_TRUE(raw.db->Get(rocksdb::ReadOptions(), audit, key, &value).ok());
    v1::StoredAuditEntry stored;
    ASSERT_TRUE(stored.ParseFromString(value));
    ASSERT_EQ(stored.entry().find("first"), std::string::npos);
    stored.mutable_entry()->back() ^= 1;
    altered = stored.SerializeAsString();
    ASSERT_TRUE(raw.db->Put(rocksdb::WriteOptions(), audit, key, altered).ok());
  }
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open(With(master_)));
  std::vector<std::string> details;
  ASSERT_OK(store->ScanAuditEntries(1, [&](uint64_t i, absl::string_view raw) {
    // The one that does not open comes as it is stored.
    if (i == 1) {
      EXPECT_TRUE(raw == altered);
    }
    v1::StoredAuditEntry stored;
    v1::AuditEntry a;
    if (stored.ParseFromArray(raw.data(), raw.size()) &&
        a.ParseFromString(stored.entry())) {
      details.push_back(a.detail());
    } else {
      details.push_back("(does not parse)");
    }
    return true;
  }));
  ASSERT_EQ(details.size(), 2u);
  EXPECT_NE(details[0], "first");
  EXPECT_EQ(details[1], "second");
  int visited = 0;
  EXPECT_THAT(
      store->ScanAuditEntriesForDocument("doc-1",
                                         [&](uint64_t, absl::string_view) {
                                           ++visited;
                                           return true;
                                         }),
      StatusIs(absl::StatusCode::kDataLoss,
               HasSubstr("audit entry 1 is sealed at rest and does "
                         "not open")));
  EXPECT_EQ(visited, 0);
}

TEST_F(EncryptionTest, TheMemoryStoreEncryptsToo) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                       NewMemoryStore(With(master_)));
  ASSERT_OK(Put(*store, MakeDocument("doc-1", "one")));
  ExpectReads(*store, "doc-1", "one");
  EXPECT_TRUE(store->Encryption().enabled);
  EXPECT_THAT(NewMemoryStore(With("not 32 bytes")).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace lienthong::storage
