// The README's grpcurl examples, run for real against a real lienthongd.
//
// The commands are read from README.md ("The gRPC API with grpcurl") at test
// time and run with `lienthong-reflect` (tests/tools), a grpcurl work-alike
// that knows no .proto files and resolves everything through the broker's
// reflection service, so a renamed service, method, field or enum value in
// the README or in the protos makes this test fail. A small shell reader
// here takes the code blocks apart (variables, quotes, backslash-newlines,
// one known command substitution); the README's placeholders are replaced in
// C++: grpcurl -> lienthong-reflect, pki/ -> the dev PKI, 127.0.0.1:7443 ->
// the broker, <ID> -> a document sent first, $(jq -Rs . < new-policy.yaml)
// -> the development policy as a JSON string.
//
// Then every AdminService method reflection lists is called, still through
// lienthong-reflect (no generated stubs), as the operator, the auditor and
// an organization, and the access rules of admin.proto are checked.
#include <sys/stat.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest-spi.h"
#include "gtest/gtest.h"
#include "lienthong/common/sealing.h"
#include "tests/integration/broker_process.h"
#include "tests/testing/status_matchers.h"

#ifndef LIENTHONG_SOURCE_DIR
#error "LIENTHONG_SOURCE_DIR must be defined (tests/integration/CMakeLists.txt)"
#endif
#ifndef LIENTHONG_REFLECT_PATH
#error \
    "LIENTHONG_REFLECT_PATH must be defined (tests/integration/CMakeLists.txt)"
#endif

namespace lienthong::integration {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;

constexpr char kSection[] = "## The gRPC API with grpcurl";
constexpr char kReadmeEndpoint[] = "127.0.0.1:7443";
constexpr char kJqPolicy[] = "jq -Rs . < new-policy.yaml";
constexpr absl::Duration kCommandTimeout = absl::Seconds(20);
// lienthong-reflect exits 64 + the gRPC code when a call fails, as grpcurl.
constexpr int kInvalidArgumentExit = 64 + 3;
constexpr int kPermissionDeniedExit = 64 + 7;

// ---- README -----------------------------------------------------------------

// A code block of the section and the line (1-based) where its text starts.
struct CodeBlock {
  std::string text;
  int line = 0;
};

// The ```sh blocks of the README section titled `title` (up to the next
// "## " heading).
absl::StatusOr<std::vector<CodeBlock>> SectionCodeBlocks(
    const std::string& readme, absl::string_view title) {
  std::vector<std::string> lines = absl::StrSplit(readme, '\n');
  std::vector<CodeBlock> blocks;
  bool in_section = false;
  bool found = false;
  std::optional<CodeBlock> open;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    if (!open && absl::StartsWith(line, "## ")) {
      in_section = absl::StripTrailingAsciiWhitespace(line) == title;
      found = found || in_section;
      continue;
    }
    if (!in_section) continue;
    if (absl::StartsWith(line, "```")) {
      if (open) {
        blocks.push_back(*std::move(open));
        open.reset();
      } else if (line == "```sh" || line == "```bash" || line == "```shell") {
        open = CodeBlock{"", static_cast<int>(i + 2)};
      } else {
        return absl::FailedPreconditionError(
            absl::StrCat("README.md:", i + 1, ": code block \"", line,
                         "\" in \"", title, "\" is not ```sh"));
      }
      continue;
    }
    if (open) absl::StrAppend(&open->text, line, "\n");
  }
  if (!found) {
    return absl::NotFoundError(
        absl::StrCat("README.md has no section \"", title, "\""));
  }
  if (open) return absl::FailedPreconditionError("README.md: unclosed ```");
  return blocks;
}

// `text` as a JSON string, as `jq -Rs .` prints it.
std::string JsonQuote(absl::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppend(
              &out, "\\u00",
              absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

// One command of a code block, after expansion and quote removal.
struct ShellCommand {
  std::vector<std::string> argv;
  std::string source;  // as written in the README
  int line = 0;
};

// Just enough of sh to read the README's examples: words, '...', "..." (with
// \", \\, \$, \` and backslash-newline), backslash-newline continuations,
// comments, NAME=value assignments, $NAME / ${NAME} (split into words when
// unquoted) and $(...) for the command substitutions in `substitutions`.
// Anything else it does not understand is an error, never a guess.
class ReadmeShell {
 public:
  explicit ReadmeShell(std::map<std::string, std::string> substitutions)
      : substitutions_(std::move(substitutions)) {}

  absl::StatusOr<std::vector<ShellCommand>> Parse(const CodeBlock& block) {
    text_ = block.text;
    pos_ = 0;
    line_ = block.line;
    std::vector<ShellCommand> commands;
    while (pos_ < text_.size()) {
      absl::StatusOr<std::optional<ShellCommand>> c = NextCommand();
      if (!c.ok()) return c.status();
      if (*c) commands.push_back(**std::move(c));
    }
    return commands;
  }

  const std::map<std::string, std::string>& variables() const {
    return variables_;
  }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("README.md:", line_, ": ", what));
  }

  static bool IsNameChar(char c, bool first) {
    return c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (!first && c >= '0' && c <= '9');
  }

  // Reads NAME at pos_ (after '$'); empty when none.
  std::string ReadName() {
    std::string name;
    if (pos_ < text_.size() && text_[pos_] == '{') {
      size_t close = text_.find('}', pos_);
      if (close == std::string::npos) return "";
      name = text_.substr(pos_ + 1, close - pos_ - 1);
      pos_ = close + 1;
      return name;
    }
    while (pos_ < text_.size() && IsNameChar(text_[pos_], name.empty())) {
      name += text_[pos_++];
    }
    return name;
  }

  absl::StatusOr<std::string> Variable(const std::string& name) const {
    auto it = variables_.find(name);
    if (it == variables_.end()) {
      return Error(absl::StrCat("$", name, " is not set in the section"));
    }
    return it->second;
  }

  // Reads $(...) at pos_ (after "$("); its replacement.
  absl::StatusOr<std::string> CommandSubstitution() {
    int depth = 1;
    size_t start = pos_;
    for (; pos_ < text_.size(); ++pos_) {
      if (text_[pos_] == '(') ++depth;
      if (text_[pos_] == ')' && --depth == 0) break;
    }
    if (pos_ >= text_.size()) return Error("unclosed $(");
    std::string inner = text_.substr(start, pos_ - start);
    ++pos_;
    auto it =
        substitutions_.find(std::string(absl::StripAsciiWhitespace(inner)));
    if (it == substitutions_.end()) {
      return Error(absl::StrCat("unknown command substitution $(", inner, ")"));
    }
    return it->second;
  }

  absl::StatusOr<std::optional<ShellCommand>> NextCommand() {
    ShellCommand command;
    command.line = line_;
    const size_t start = pos_;
    std::vector<std::string>& words = command.argv;
    std::string word;
    bool in_word = false;
    std::string plain;             // the word's unquoted literal start
    bool plain_open = true;        // nothing quoted or expanded yet in the word
    std::vector<bool> assignment;  // per word: NAME=... written plainly
    auto end_word = [&] {
      if (in_word) {
        size_t eq = plain.find('=');
        bool is_assignment = eq != std::string::npos && eq > 0;
        for (size_t i = 0; is_assignment && i < eq; ++i) {
          is_assignment = IsNameChar(plain[i], i == 0);
        }
        words.push_back(word);
        assignment.push_back(is_assignment);
      }
      word.clear();
      plain.clear();
      plain_open = true;
      in_word = false;
    };
    // An unquoted expansion: split on blanks into words.
    auto append_split = [&](const std::string& value) {
      plain_open = false;
      std::vector<std::string> parts =
          absl::StrSplit(value, absl::ByAnyChar(" \t\n"), absl::SkipEmpty());
      for (size_t i = 0; i < parts.size(); ++i) {
        if (i > 0) end_word();
        word += parts[i];
        in_word = true;
      }
    };
    bool done = false;
    while (!done && pos_ < text_.size()) {
      char c = text_[pos_++];
      if (c == '\n') ++line_;
      switch (c) {
        case '\n':
          end_word();
          done = true;
          break;
        case ' ':
        case '\t':
          end_word();
          break;
        case '#':
          if (in_word) {
            word += c;
            if (plain_open) plain += c;
            break;
          }
          while (pos_ < text_.size() && text_[pos_] != '\n') ++pos_;
          break;
        case '\\':
          if (pos_ >= text_.size()) return Error("backslash at the end");
          if (text_[pos_] == '\n') {
            ++pos_;
            ++line_;
            break;
          }
          word += text_[pos_++];
          plain_open = false;
          in_word = true;
          break;
        case '\'': {
          size_t close = text_.find('\'', pos_);
          if (close == std::string::npos) return Error("unclosed '");
          std::string quoted = text_.substr(pos_, close - pos_);
          line_ += std::count(quoted.begin(), quoted.end(), '\n');
          word += quoted;
          pos_ = close + 1;
          plain_open = false;
          in_word = true;
          break;
        }
        case '"': {
          plain_open = false;
          in_word = true;
          while (true) {
            if (pos_ >= text_.size()) return Error("unclosed \"");
            char d = text_[pos_++];
            if (d == '"') break;
            if (d == '\n') ++line_;
            if (d == '\\' && pos_ < text_.size()) {
              char e = text_[pos_];
              if (e == '\n') {
                ++pos_;
                ++line_;
              } else if (e == '"' || e == '\\' || e == '$' || e == '`') {
                word += e;
                ++pos_;
              } else {
                word += d;
              }
            } else if (d == '$' && pos_ < text_.size() && text_[pos_] == '(') {
              ++pos_;
              absl::StatusOr<std::string> value = CommandSubstitution();
              if (!value.ok()) return value.status();
              word += *value;
            } else if (d == '$') {
              std::string name = ReadName();
              if (name.empty()) {
                word += d;
                continue;
              }
              absl::StatusOr<std::string> value = Variable(name);
              if (!value.ok()) return value.status();
              word += *value;
            } else if (d == '`') {
              return Error("backquotes are not supported");
            } else {
              word += d;
            }
          }
          break;
        }
        case '$': {
          if (pos_ < text_.size() && text_[pos_] == '(') {
            ++pos_;
            absl::StatusOr<std::string> value = CommandSubstitution();
            if (!value.ok()) return value.status();
            append_split(*value);
            break;
          }
          std::string name = ReadName();
          if (name.empty()) {
            word += c;
            in_word = true;
            break;
          }
          absl::StatusOr<std::string> value = Variable(name);
          if (!value.ok()) return value.status();
          append_split(*value);
          break;
        }
        case '|':
        case '&':
        case ';':
        case '<':
        case '>':
        case '`':
        case '(':
        case ')':
          return Error(absl::StrCat("'", std::string(1, c),
                                    "' (pipes, redirections, lists) is not "
                                    "supported"));
        default:
          word += c;
          if (plain_open) plain += c;
          in_word = true;
      }
    }
    end_word();
    command.source = std::string(absl::StripAsciiWhitespace(
        absl::string_view(text_).substr(start, pos_ - start)));
    if (words.empty()) return std::nullopt;
    size_t assignments = 0;
    while (assignments < words.size() && assignment[assignments]) {
      ++assignments;
    }
    if (assignments == words.size()) {
      for (const std::string& w : words) {
        size_t eq = w.find('=');
        variables_[w.substr(0, eq)] = w.substr(eq + 1);
      }
      return std::nullopt;
    }
    if (assignments > 0) {
      return Error("NAME=value before a command is not supported");
    }
    return command;
  }

  std::map<std::string, std::string> substitutions_;
  std::map<std::string, std::string> variables_;
  std::string text_;
  size_t pos_ = 0;
  int line_ = 0;
};

// ---- the fixture
// ----------------------------------------------------------------

absl::StatusOr<google::protobuf::Struct> ParseJsonObject(
    const std::string& text) {
  google::protobuf::Struct object;
  auto s = google::protobuf::util::JsonStringToMessage(text, &object);
  if (!s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not one JSON object: ", s.ToString(), "\n", text));
  }
  return object;
}

std::string StringField(const google::protobuf::Struct& object,
                        const std::string& name) {
  auto it = object.fields().find(name);
  if (it == object.fields().end()) return "";
  return it->second.string_value();
}

std::string DescribeRun(const std::vector<std::string>& argv,
                        const ProgramResult& r) {
  return absl::StrCat("$ ", absl::StrJoin(argv, " "), "\nexit ", r.exit_code,
                      r.timed_out ? " (timed out)" : "", "\nstdout:\n",
                      r.stdout_text, "\nstderr:\n", r.stderr_text);
}

class GrpcurlExamplesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::string> pki = DevPkiDir();
    ASSERT_OK(pki);
    pki_ = new std::string(*pki);
    // With encryption at rest, so that RotateStorageKeys has keys to rotate.
    const std::string key_file = *pki_ + "/grpcurl-test-master.key";
    ASSERT_OK(WriteFile(key_file, sealing::HexOf(sealing::RandomKey())));
    ASSERT_EQ(::chmod(key_file.c_str(), 0600), 0);
    // grpcurl cannot sign documents: the README's Send example is for a
    // broker that accepts unsigned ones (security.require_signatures).
    BrokerOptions options;
    options.config_yaml =
        absl::StrCat("storage: {master_key_file: ", key_file, "}\n",
                     "security: {require_signatures: false}\n");
    broker_ = new BrokerProcess(options);
    ASSERT_OK(broker_->Start());
    absl::StatusOr<std::string> policy =
        ReadFile(std::string(LIENTHONG_SOURCE_DIR) +
                 "/deploy/policy/lienthong-policy.yaml");
    ASSERT_OK(policy);
    policy_ = new std::string(*policy);
  }

  static void TearDownTestSuite() {
    delete broker_;
    broker_ = nullptr;
    delete pki_;
    delete policy_;
  }

  void SetUp() override {
    ASSERT_NE(broker_, nullptr);
    ASSERT_TRUE(broker_->running()) << broker_->stderr_text();
  }

  // lienthong-reflect with `cert` ("orgs/000.00.00.H49", "persons/operator")
  // against the broker.
  static std::vector<std::string> Tool(const std::string& cert) {
    return {LIENTHONG_REFLECT_PATH,
            "-cacert",
            absl::StrCat(*pki_, "/ca.pem"),
            "-cert",
            absl::StrCat(*pki_, "/", cert, ".pem"),
            "-key",
            absl::StrCat(*pki_, "/", cert, ".key")};
  }

  static ProgramResult Run(const std::vector<std::string>& argv) {
    absl::StatusOr<ProgramResult> r = RunProgram(argv, kCommandTimeout);
    EXPECT_OK(r);
    if (!r.ok()) return ProgramResult{};
    return *std::move(r);
  }

  // Calls `method` (SERVICE/METHOD) as `cert` with `json`.
  static ProgramResult Call(const std::string& cert, const std::string& method,
                            const std::string& json) {
    std::vector<std::string> argv = Tool(cert);
    argv.insert(argv.end(),
                {"-max-time", "15", "-d", json, broker_->endpoint(), method});
    return Run(argv);
  }

  static std::string Policy() { return *policy_; }

  // Sends a document from H49 to G22 with lienthong-reflect; its id.
  static std::string SendDocument(const std::string& subject) {
    ProgramResult sent =
        Call("orgs/000.00.00.H49", "lienthong.v1.ExchangeService/Send",
             absl::StrCat(R"({"document":{"recipients":["000.00.00.G22"],)",
                          R"("sender":"000.00.00.H49","metadata":{"subject":)",
                          JsonQuote(subject), R"(},"body":"SGVsbG8="}})"));
    EXPECT_EQ(sent.exit_code, 0) << sent.stderr_text;
    absl::StatusOr<google::protobuf::Struct> answer =
        ParseJsonObject(sent.stdout_text);
    EXPECT_OK(answer);
    if (!answer.ok()) return "";
    std::string id = StringField(*answer, "documentId");
    EXPECT_THAT(id, SizeIs(26)) << sent.stdout_text;
    return id;
  }

  static BrokerProcess* broker_;
  static std::string* pki_;
  static std::string* policy_;
};

BrokerProcess* GrpcurlExamplesTest::broker_ = nullptr;
std::string* GrpcurlExamplesTest::pki_ = nullptr;
std::string* GrpcurlExamplesTest::policy_ = nullptr;

// Who may call each AdminService method, as admin.proto documents it in the
// comment above each rpc: "Operators only." or "Operators and auditors.".
enum class Access { kOperatorsOnly, kOperatorsAndAuditors, kUndocumented };

absl::StatusOr<std::map<std::string, Access>> DocumentedAdminAccess() {
  absl::StatusOr<std::string> proto = ReadFile(
      std::string(LIENTHONG_SOURCE_DIR) + "/proto/lienthong/v1/admin.proto");
  if (!proto.ok()) return proto.status();
  std::map<std::string, Access> access;
  bool in_service = false;
  std::string comment;
  for (absl::string_view line : absl::StrSplit(*proto, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (absl::StartsWith(line, "service AdminService")) {
      in_service = true;
      continue;
    }
    if (!in_service) continue;
    if (line == "}") break;
    if (absl::ConsumePrefix(&line, "//")) {
      absl::StrAppend(&comment, " ", absl::StripAsciiWhitespace(line));
      continue;
    }
    if (absl::ConsumePrefix(&line, "rpc ")) {
      std::string name(line.substr(0, line.find('(')));
      name = std::string(absl::StripAsciiWhitespace(name));
      access[name] = absl::StrContains(comment, "Operators only.")
                         ? Access::kOperatorsOnly
                     : absl::StrContains(comment, "Operators and auditors.")
                         ? Access::kOperatorsAndAuditors
                         : Access::kUndocumented;
      comment.clear();
    }
  }
  if (access.empty()) {
    return absl::NotFoundError("admin.proto: no rpc in service AdminService");
  }
  return access;
}

// ---- the README's examples
// -------------------------------------------------------

// Runs the examples of `readme`'s section; gtest failures for what breaks.
void RunReadmeExamples(const std::string& readme, const std::string& id,
                       const std::string& policy, const std::string& pki,
                       const std::string& endpoint) {
  ASSERT_OK_AND_ASSIGN(std::vector<CodeBlock> blocks,
                       SectionCodeBlocks(readme, kSection));
  ASSERT_THAT(blocks, SizeIs(testing::Ge(1)));

  ReadmeShell shell({{kJqPolicy, JsonQuote(policy)}});
  std::vector<ShellCommand> commands;
  for (const CodeBlock& block : blocks) {
    ASSERT_OK_AND_ASSIGN(std::vector<ShellCommand> some, shell.Parse(block));
    EXPECT_THAT(some, SizeIs(testing::Ge(1)))
        << "README.md:" << block.line << ": a code block without a command";
    commands.insert(commands.end(), some.begin(), some.end());
  }
  // The section defines G (an organization) and A (the operator).
  EXPECT_TRUE(shell.variables().count("G"));
  EXPECT_TRUE(shell.variables().count("A"));

  std::set<std::string> seen;  // "list", "describe X", or the method
  for (ShellCommand& command : commands) {
    SCOPED_TRACE(
        absl::StrCat("README.md:", command.line, ":\n", command.source));
    // The README's placeholders, replaced word by word.
    std::vector<std::string>& argv = command.argv;
    ASSERT_EQ(argv[0], "grpcurl") << "only grpcurl commands are expected";
    argv[0] = LIENTHONG_REFLECT_PATH;
    std::string cert;  // the -cert, relative to pki/, without ".pem"
    size_t endpoint_at = 0;
    for (size_t i = 1; i < argv.size(); ++i) {
      std::string& w = argv[i];
      if (absl::StartsWith(w, "pki/")) {
        if (argv[i - 1] == "-cert") {
          cert = std::string(absl::StripSuffix(w.substr(4), ".pem"));
        }
        w = absl::StrCat(pki, w.substr(3));
      }
      if (w == kReadmeEndpoint) {
        w = endpoint;
        endpoint_at = i;
      }
      absl::StrReplaceAll({{"<ID>", id}}, &w);
    }
    ASSERT_GT(endpoint_at, 0u) << "no " << kReadmeEndpoint << " in the command";
    ASSERT_LT(endpoint_at + 1, argv.size()) << "nothing after the endpoint";
    const std::string verb = argv[endpoint_at + 1];
    const std::string symbol =
        endpoint_at + 2 < argv.size() ? argv[endpoint_at + 2] : "";

    absl::StatusOr<ProgramResult> run = RunProgram(argv, kCommandTimeout);
    ASSERT_OK(run);
    const ProgramResult& r = *run;
    ASSERT_EQ(r.exit_code, 0) << DescribeRun(argv, r);
    ASSERT_FALSE(r.stdout_text.empty()) << DescribeRun(argv, r);
    const std::string& out = r.stdout_text;

    if (verb == "list") {
      seen.insert(absl::StrCat("list ", symbol));
      if (symbol.empty()) {
        for (const char* service :
             {"lienthong.v1.ExchangeService", "lienthong.v1.AdminService",
              "lienthong.v1.FederationService", "grpc.health.v1.Health"}) {
          EXPECT_THAT(out, HasSubstr(absl::StrCat(service, "\n")));
        }
      } else {
        EXPECT_THAT(out, HasSubstr(absl::StrCat(symbol, "."))) << out;
      }
      continue;
    }
    if (verb == "describe") {
      seen.insert(absl::StrCat("describe ", symbol));
      EXPECT_THAT(out, HasSubstr(absl::StrCat(symbol, " is a"))) << out;
      if (absl::EndsWith(symbol, "Service")) {
        EXPECT_THAT(out, HasSubstr("rpc ")) << out;
      }
      continue;
    }
    // A call: the answer is one JSON object.
    seen.insert(verb);
    ASSERT_OK_AND_ASSIGN(google::protobuf::Struct answer, ParseJsonObject(out));
    const std::string method = verb.substr(verb.find('/') + 1);
    if (verb == "grpc.health.v1.Health/Check") {
      EXPECT_EQ(StringField(answer, "status"), "SERVING") << out;
    } else if (method == "Send") {
      EXPECT_THAT(StringField(answer, "documentId"), SizeIs(26)) << out;
    } else if (method == "GetDocumentStatus") {
      EXPECT_EQ(StringField(answer, "documentId"), id) << out;
    } else if (method == "GetBrokerInfo") {
      EXPECT_TRUE(absl::StartsWith(StringField(answer, "broker"),
                                   "spiffe://lienthong.local/broker/"))
          << out;
      EXPECT_EQ(StringField(answer, "caller"),
                absl::StrCat("spiffe://lienthong.local/person/",
                             absl::StripPrefix(cert, "persons/")))
          << out;
    } else if (method == "GetPolicy" || method == "ApplyPolicy") {
      EXPECT_TRUE(absl::StartsWith(StringField(answer, "version"), "sha256:"))
          << out;
    } else if (method == "DryRunPolicy") {
      EXPECT_TRUE(
          absl::StartsWith(StringField(answer, "candidateVersion"), "sha256:"))
          << out;
    } else if (method == "ExplainPolicy") {
      EXPECT_TRUE(
          absl::StartsWith(StringField(answer, "effect"), "POLICY_EFFECT_"))
          << out;
      EXPECT_FALSE(StringField(answer, "reason").empty()) << out;
    }
    // ListPeers and ListDirectory may well be {} on a lone broker.
  }
  // Guards against the reader silently finding less than there is.
  EXPECT_THAT(seen, Contains("list "));
  EXPECT_THAT(seen, Contains("lienthong.v1.ExchangeService/Send"));
  EXPECT_GE(commands.size(), 10u) << "fewer examples than expected";
  std::cout << "ran " << commands.size() << " grpcurl examples of README.md\n";
}

TEST_F(GrpcurlExamplesTest, EveryReadmeExampleRunsAndAnswers) {
  // A document whose id stands in for <ID>.
  const std::string id = SendDocument("cho <ID>");
  ASSERT_THAT(id, SizeIs(26));
  ASSERT_OK_AND_ASSIGN(
      std::string readme,
      ReadFile(std::string(LIENTHONG_SOURCE_DIR) + "/README.md"));
  RunReadmeExamples(readme, id, Policy(), *pki_, broker_->endpoint());
}

// The check above can fail: a README whose example names a method, a field
// or an enum value the broker does not have makes it fail.
TEST_F(GrpcurlExamplesTest, ABrokenReadmeExampleFailsTheCheck) {
  const std::string id = SendDocument("cho <ID>");
  ASSERT_THAT(id, SizeIs(26));
  ASSERT_OK_AND_ASSIGN(
      std::string readme,
      ReadFile(std::string(LIENTHONG_SOURCE_DIR) + "/README.md"));
  // What to break, how, and what the failure must name.
  struct Breakage {
    std::string from, to, named;
  };
  const std::vector<Breakage> breakages = {
      {"ExchangeService/GetDocumentStatus", "ExchangeService/GetDocumentState",
       "does not include a method named \"GetDocumentState\""},
      {R"({"document_id":"<ID>"})", R"({"doc_id":"<ID>"})", "doc_id"},
      {"ORIGIN_AI", "ORIGIN_ROBOT", "ORIGIN_ROBOT"},
      {"AdminService/ListPeers", "AdminService/ListPeer", "ListPeer"},
  };
  for (const auto& [from, to, named] : breakages) {
    SCOPED_TRACE(absl::StrCat(from, " -> ", to));
    ASSERT_TRUE(absl::StrContains(readme, from))
        << "the README changed; pick another breakage";
    std::string broken = absl::StrReplaceAll(readme, {{from, to}});
    ::testing::TestPartResultArray failures;
    {
      ::testing::ScopedFakeTestPartResultReporter intercept(
          ::testing::ScopedFakeTestPartResultReporter::
              INTERCEPT_ONLY_CURRENT_THREAD,
          &failures);
      RunReadmeExamples(broken, id, Policy(), *pki_, broker_->endpoint());
    }
    EXPECT_GT(failures.size(), 0) << "a broken example went unnoticed";
    if (failures.size() > 0) {
      EXPECT_THAT(failures.GetTestPartResult(0).message(), HasSubstr(named));
    }
  }
}

// ---- every AdminService method, by role
// -------------------------------------------

// What this test knows of a method beyond its access: a valid request, and
// what the operator gets for an empty one (OK, or INVALID_ARGUMENT naming
// the field).
struct AdminMethod {
  std::string valid_request;
  std::string empty_error;  // substring of INVALID_ARGUMENT; empty: OK
};

TEST_F(GrpcurlExamplesTest, EveryAdminMethodByRole) {
  const std::string id = SendDocument("cho AdminService");
  ASSERT_THAT(id, SizeIs(26));
  const std::string policy = JsonQuote(Policy());
  std::map<std::string, AdminMethod> known = {
      {"GetPolicy", {"{}", ""}},
      {"ValidatePolicy", {absl::StrCat(R"({"source":)", policy, "}"), ""}},
      {"ExplainPolicy",
       {R"({"flow":{"sender":"000.00.00.H49","recipient":"000.00.00.G22"}})",
        "flow: missing"}},
      {"ApplyPolicy",
       {absl::StrCat(R"({"source":)", policy, "}"), "source: empty"}},
      {"DryRunPolicy",
       {absl::StrCat(R"({"candidate_source":)", policy, "}"),
        "candidate_source: empty"}},
      {"ListPolicyDecisions", {R"({"limit":10})", ""}},
      {"GetBrokerInfo", {"{}", ""}},
      {"ListPeers", {"{}", ""}},
      {"ListDirectory", {R"({"org":"000.00.00.H49"})", ""}},
      {"ListQueues", {"{}", ""}},
      {"GetDocument",
       {absl::StrCat(R"({"document_id":")", id, R"("})"), "document_id"}},
      // The level the broker runs at already.
      {"SetLogLevel", {R"({"level":"info"})", "level"}},
      {"RotateStorageKeys", {"{}", ""}},
      {"ExportEvidence",
       {absl::StrCat(R"({"document_id":")", id, R"("})"), "document_id"}},
      {"ListPaperConversions", {R"({"org":"000.00.00.H49"})", "org"}},
  };
  ASSERT_OK_AND_ASSIGN(auto documented, DocumentedAdminAccess());

  std::vector<std::string> list = Tool("persons/operator");
  list.insert(list.end(),
              {broker_->endpoint(), "list", "lienthong.v1.AdminService"});
  ProgramResult listed = Run(list);
  ASSERT_EQ(listed.exit_code, 0) << DescribeRun(list, listed);
  std::vector<std::string> methods;
  for (absl::string_view line :
       absl::StrSplit(listed.stdout_text, '\n', absl::SkipEmpty())) {
    ASSERT_TRUE(absl::ConsumePrefix(&line, "lienthong.v1.AdminService."))
        << listed.stdout_text;
    methods.emplace_back(line);
  }
  ASSERT_THAT(methods, SizeIs(testing::Ge(9))) << listed.stdout_text;
  for (const char* name : {"GetPolicy", "ApplyPolicy", "GetBrokerInfo",
                           "ListPeers", "ListDirectory"}) {
    EXPECT_THAT(methods, Contains(name)) << "reflection no longer lists it";
  }

  for (const std::string& name : methods) {
    SCOPED_TRACE(name);
    const std::string full = absl::StrCat("lienthong.v1.AdminService/", name);
    auto doc = documented.find(name);
    ASSERT_NE(doc, documented.end())
        << "reflection lists " << name << " but admin.proto does not";
    ASSERT_NE(doc->second, Access::kUndocumented)
        << "admin.proto does not say who may call " << name
        << " (\"Operators only.\" or \"Operators and auditors.\")";
    const bool operator_only = doc->second == Access::kOperatorsOnly;
    auto it = known.find(name);
    if (it == known.end()) {
      std::cout << "note: " << name << " is new to this test: called with {} "
                << "only (add a valid request to `known`)\n";
    }
    const std::optional<AdminMethod> m =
        it == known.end() ? std::nullopt : std::optional(it->second);
    std::vector<std::string> requests = {"{}"};
    if (m) requests.push_back(m->valid_request);

    for (const char* person : {"persons/operator", "persons/auditor"}) {
      SCOPED_TRACE(person);
      const std::string caller =
          absl::StrCat("spiffe://lienthong.local/person/",
                       absl::StripPrefix(person, "persons/"));
      const bool allowed =
          !operator_only || absl::string_view(person) == "persons/operator";
      for (const std::string& request : requests) {
        SCOPED_TRACE(request.substr(0, 100));
        ProgramResult r = Call(person, full, request);
        if (!allowed) {
          EXPECT_EQ(r.exit_code, kPermissionDeniedExit) << r.stderr_text;
          EXPECT_THAT(r.stderr_text, HasSubstr("Code: PermissionDenied"));
          EXPECT_THAT(r.stderr_text, HasSubstr(caller));
          EXPECT_THAT(r.stderr_text, HasSubstr("the operator role"));
          continue;
        }
        if (request == "{}" && !m) {
          // Unknown: OK, or an empty request refused as invalid.
          EXPECT_THAT(r.exit_code, testing::AnyOf(0, kInvalidArgumentExit))
              << r.stderr_text;
          continue;
        }
        if (request == "{}" && !m->empty_error.empty()) {
          EXPECT_EQ(r.exit_code, kInvalidArgumentExit) << r.stderr_text;
          EXPECT_THAT(r.stderr_text, HasSubstr("Code: InvalidArgument"));
          EXPECT_THAT(r.stderr_text, HasSubstr(m->empty_error));
          continue;
        }
        ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
        ASSERT_OK_AND_ASSIGN(google::protobuf::Struct answer,
                             ParseJsonObject(r.stdout_text));
        if (name == "GetBrokerInfo") {
          EXPECT_EQ(StringField(answer, "caller"), caller) << r.stdout_text;
          EXPECT_THAT(r.stdout_text,
                      HasSubstr(absl::StrCat(
                          "\"", absl::StripPrefix(person, "persons/"), "\"")));
        } else if (name == "ValidatePolicy") {
          // An empty text is not an error: the answer says why it is invalid.
          EXPECT_THAT(r.stdout_text, request == "{}"
                                         ? HasSubstr("source: empty")
                                         : HasSubstr("\"ok\": true"));
        } else if (name == "ApplyPolicy") {
          // The development policy serves already: nothing changes.
          EXPECT_TRUE(
              absl::StartsWith(StringField(answer, "version"), "sha256:"))
              << r.stdout_text;
          EXPECT_THAT(r.stdout_text, Not(HasSubstr("\"changed\": true")));
        } else if (name == "GetDocument") {
          EXPECT_THAT(r.stdout_text, HasSubstr(id));
          EXPECT_THAT(r.stdout_text, Not(HasSubstr("SGVsbG8=")))
              << "operators route documents; they do not read them";
        } else if (name == "ListQueues") {
          EXPECT_THAT(r.stdout_text, HasSubstr("000.00.00.G22"));
        } else if (name == "SetLogLevel") {
          EXPECT_EQ(StringField(answer, "level"), "info") << r.stdout_text;
        }
      }
    }
    // An organization certificate: PERMISSION_DENIED naming the caller and
    // the method, whatever the request.
    for (const std::string& request : requests) {
      ProgramResult org = Call("orgs/000.00.00.H49", full, request);
      EXPECT_EQ(org.exit_code, kPermissionDeniedExit)
          << org.stdout_text << org.stderr_text;
      EXPECT_THAT(org.stderr_text,
                  HasSubstr("spiffe://lienthong.local/org/000.00.00.H49"));
      EXPECT_THAT(org.stderr_text,
                  HasSubstr(absl::StrCat(" may not call ", name)));
    }
  }
  if (known.count("GetDocument") && std::find(methods.begin(), methods.end(),
                                              "GetDocument") != methods.end()) {
    // NOT_FOUND when this broker never had it.
    ProgramResult missing =
        Call("persons/auditor", "lienthong.v1.AdminService/GetDocument",
             R"({"document_id":"01ARZ3NDEKTSV4RRFFQ69G5FAV"})");
    EXPECT_EQ(missing.exit_code, 64 + 5) << missing.stderr_text;
  }

  // Each call was audited, refusals included (whatever the log format).
  bool audited = false;
  for (absl::string_view line : absl::StrSplit(broker_->stderr_text(), '\n')) {
    audited = audited || (absl::StrContains(line, "audit") &&
                          absl::StrContains(line, "ApplyPolicy") &&
                          absl::StrContains(line, "PERMISSION_DENIED") &&
                          absl::StrContains(line, "person/auditor"));
  }
  EXPECT_TRUE(audited) << broker_->stderr_text();
}

// lienthong-reflect itself: what a failed call looks like, so that the
// checks above mean what they say.
TEST_F(GrpcurlExamplesTest, TheToolReportsErrorsAsGrpcurlDoes) {
  // An unknown field in the request is refused before any call.
  ProgramResult bad_field =
      Call("persons/operator", "lienthong.v1.AdminService/GetPolicy",
           R"({"no_such_field":1})");
  EXPECT_EQ(bad_field.exit_code, 1) << bad_field.stderr_text;
  EXPECT_THAT(bad_field.stderr_text, HasSubstr("no_such_field"));
  // An unknown method too.
  ProgramResult bad_method =
      Call("persons/operator", "lienthong.v1.AdminService/NoSuchMethod", "{}");
  EXPECT_EQ(bad_method.exit_code, 1) << bad_method.stderr_text;
  EXPECT_THAT(bad_method.stderr_text, HasSubstr("NoSuchMethod"));
  // A refused call: 64 + the code, and the code and message on stderr.
  ProgramResult bad_id = Call("orgs/000.00.00.H49",
                              "lienthong.v1.ExchangeService/GetDocumentStatus",
                              R"({"document_id":"nope"})");
  EXPECT_EQ(bad_id.exit_code, kInvalidArgumentExit) << bad_id.stderr_text;
  EXPECT_THAT(bad_id.stderr_text, HasSubstr("Code: InvalidArgument"));
  EXPECT_THAT(bad_id.stderr_text, HasSubstr("document_id"));
  // A server-streaming call prints what arrives until -max-time.
  std::vector<std::string> watch = Tool("orgs/000.00.00.H49");
  watch.insert(watch.end(), {"-max-time", "1", "-d", "{}", broker_->endpoint(),
                             "lienthong.v1.ExchangeService/WatchStatus"});
  ProgramResult watched = Run(watch);
  EXPECT_EQ(watched.exit_code, 64 + 4) << DescribeRun(watch, watched);
  EXPECT_THAT(watched.stderr_text, HasSubstr("DeadlineExceeded"));
}

}  // namespace
}  // namespace lienthong::integration
