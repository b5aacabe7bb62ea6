#!/usr/bin/env bash
# Liên Thông: install dependencies (Debian 12), build into ./build and run all
# tests. Runnable from any working directory. ctest's summary is the last
# output, and the exit code is ctest's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

deploy/setup-debian.sh
deploy/setup-debian.sh --build build
cd build
exec ctest --output-on-failure -j2 --timeout 600
