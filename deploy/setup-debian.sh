#!/usr/bin/env bash
# Liên Thông: set up a Debian 12 (bookworm) machine and build the project.
#
#   deploy/setup-debian.sh                  install build/test dependencies (idempotent)
#   deploy/setup-debian.sh --build [DIR]    configure (Ninja, RelWithDebInfo) and build
#                                           into DIR (default: build; a relative DIR is
#                                           taken relative to the repository root)
#
# Runnable from any working directory. Installing needs root; sudo is used when
# not root and sudo is available.
set -euo pipefail

PROG=$(basename "$0")
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  openssl libssl-dev
  libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
  librocksdb-dev libabsl-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  libyaml-cpp-dev libspdlog-dev libfmt-dev libcli11-dev
  libjemalloc-dev clang-format procps
)

usage() {
  cat <<EOF
Usage:
  $PROG
      install the missing Debian packages (idempotent; needs root or sudo)
  $PROG --build [DIR]
      configure (Ninja, RelWithDebInfo) and build into DIR
      (default: build; a relative DIR is relative to $ROOT)
  $PROG --help
EOF
}

die() {
  echo "$PROG: error: $*" >&2
  exit 1
}

is_installed() {
  dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'
}

install_deps() {
  local missing=() pkg
  for pkg in "${PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    echo "$PROG: all ${#PACKAGES[@]} packages already installed"
    return 0
  fi

  local -a as_root=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "not root and sudo not found; run as root"
    as_root=(sudo)
  fi

  echo "$PROG: installing ${#missing[@]} package(s): ${missing[*]}"
  local log
  log=$(mktemp "${TMPDIR:-/tmp}/lienthong-setup.XXXXXX.log")
  if ! { "${as_root[@]}" apt-get update &&
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    echo "$PROG: package installation failed; log ($log):" >&2
    cat "$log" >&2
    exit 1
  fi
  rm -f "$log"

  for pkg in "${missing[@]}"; do
    is_installed "$pkg" || die "package $pkg still not installed after apt-get install"
  done
  echo "$PROG: packages installed"
}

build() {
  local dir=${1:-build}
  cd "$ROOT"
  local cache=$dir/CMakeCache.txt
  if [[ -f $cache ]] && ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$cache"; then
    die "build directory '$dir' (under $ROOT) was configured with another CMake generator; remove it or pick another one"
  fi
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
  cmake --build "$dir" -j"$(nproc)"
}

case "${1:-}" in
  "")
    install_deps
    ;;
  --build)
    [[ $# -le 2 ]] || die "too many arguments (see --help)"
    build "${2:-build}"
    ;;
  -h | --help)
    usage
    ;;
  *)
    die "unknown argument: $1 (see --help)"
    ;;
esac
