// Reading the policy language's YAML with precise "<file>:<line>:<column>"
// errors: shared by the policy compiler and the test-file parser.
#ifndef LIENTHONG_BROKER_POLICY_SRC_YAML_READER_H_
#define LIENTHONG_BROKER_POLICY_SRC_YAML_READER_H_

#include <yaml-cpp/yaml.h>

#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lienthong/policy/policy.h"

namespace lienthong::policy::internal {

class YamlReader {
 public:
  explicit YamlReader(absl::string_view file) : file_(file) {}

  // Parses `text`; a syntax error becomes "<file>:<line>:<column>: ...".
  absl::StatusOr<YAML::Node> Load(absl::string_view text) const;

  absl::Status Error(const YAML::Node& node, absl::string_view what) const;

  // `map` must be a mapping whose keys are all in `known`, each once.
  absl::Status CheckKeys(const YAML::Node& map, absl::string_view where,
                         const std::set<std::string>& known) const;

  absl::StatusOr<std::string> Scalar(const YAML::Node& node,
                                     absl::string_view what) const;
  absl::StatusOr<bool> Bool(const YAML::Node& node,
                            absl::string_view what) const;
  // A non-empty sequence of scalars ("[a, b]"); a single scalar is not a
  // list.
  absl::StatusOr<std::vector<std::string>> StringList(
      const YAML::Node& node, absl::string_view what) const;

  absl::StatusOr<Classification> ClassificationValue(
      const YAML::Node& node, absl::string_view what) const;
  // Parses a list of enum words into a bit mask (bit = enum value).
  template <typename E>
  absl::StatusOr<uint32_t> EnumMask(const YAML::Node& node,
                                    absl::string_view what) const;
  template <typename E>
  absl::StatusOr<E> EnumValue(const YAML::Node& node,
                              absl::string_view what) const;

  absl::StatusOr<Obligations> ObligationsValue(const YAML::Node& node,
                                               absl::string_view where) const;
  // A flow mapping as in test files and `lienthong policy explain`.
  absl::StatusOr<Flow> FlowValue(const YAML::Node& node) const;

  const std::string& file() const { return file_; }

 private:
  std::string file_;
};

// The whole of a policy or policy test file. NOT_FOUND "<path>: cannot read
// the <what>", DATA_LOSS on a read error.
absl::StatusOr<std::string> ReadTextFile(const std::string& path,
                                         absl::string_view what);

// Enum words for EnumMask / EnumValue.
template <typename E>
std::optional<E> ParseWord(absl::string_view s);
template <typename E>
std::string KnownWords();

}  // namespace lienthong::policy::internal

#endif  // LIENTHONG_BROKER_POLICY_SRC_YAML_READER_H_
