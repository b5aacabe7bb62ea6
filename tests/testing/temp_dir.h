// A fresh directory under /tmp for one test, removed with everything in it
// when the object goes away.
//
//   TempDir dir;
//   options.path = dir.path() + "/db";
#ifndef LIENTHONG_TESTS_TESTING_TEMP_DIR_H_
#define LIENTHONG_TESTS_TESTING_TEMP_DIR_H_

#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>

#include "gtest/gtest.h"

namespace lienthong::testing_util {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/lienthong-test-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
      return;
    }
    path_ = tmpl;
  }
  ~TempDir() {
    if (path_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // Empty if the directory could not be made (the test has failed then).
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Whether any file under `dir` holds `needle` (e.g. a document's text in a
// broker's data directory).
inline bool DirectoryContains(const std::string& dir,
                              const std::string& needle) {
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    if (s.str().find(needle) != std::string::npos) return true;
  }
  return false;
}

}  // namespace lienthong::testing_util

#endif  // LIENTHONG_TESTS_TESTING_TEMP_DIR_H_
