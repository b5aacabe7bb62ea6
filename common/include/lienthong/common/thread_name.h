// Names the calling thread, as top -H, perf and gdb show it. Linux keeps 15
// bytes of a name; longer names are cut there.
#ifndef LIENTHONG_COMMON_THREAD_NAME_H_
#define LIENTHONG_COMMON_THREAD_NAME_H_

#include <pthread.h>

#include <string>

#include "absl/strings/string_view.h"

namespace lienthong {

inline void NameThisThread(absl::string_view name) {
  std::string cut(name.substr(0, 15));
  pthread_setname_np(pthread_self(), cut.c_str());
}

}  // namespace lienthong

#endif  // LIENTHONG_COMMON_THREAD_NAME_H_
