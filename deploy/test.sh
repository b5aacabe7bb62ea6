#!/usr/bin/env bash
# Liên Thông: install dependencies (Debian 12), build into ./build and run all
# tests. Runnable from any working directory. ctest's summary is the last
# output, and the exit code is ctest's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

deploy/setup-debian.sh
deploy/setup-debian.sh --build build
cd build
# ctest prints its timing and the list of failed tests after the summary; run
# it, then repeat the summary line so that it is the last thing printed.
set +e
ctest --output-on-failure -j2 --timeout 600 2>&1 | tee ctest.log
rc=${PIPESTATUS[0]}
set -e
summary=$(grep -E "tests passed, [0-9]+ tests? failed out of [0-9]+" ctest.log | tail -1)
[ -n "$summary" ] && echo "$summary"
exit "$rc"
