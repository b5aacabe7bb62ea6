#!/usr/bin/env bash
# Builds the policy loader fuzzer with clang++ (libFuzzer, ASan, UBSan) into
# BUILD_DIR/fuzz and runs it on one core.
#
#   tests/fuzz/build-and-run.sh BUILD_DIR 20s      # run for 20 seconds
#   tests/fuzz/build-and-run.sh BUILD_DIR 20000    # at most 20000 runs (and 10 min)
#
# The seeds are tests/fuzz/corpus/policy/ plus deploy/policy/*.yaml; new
# inputs go to BUILD_DIR/fuzz/corpus (the committed seeds are never written).
# A crash is saved as BUILD_DIR/fuzz/crash-* and the script fails.
# Exit 77 (ctest SKIP_RETURN_CODE) when clang++ is not installed.
# Extra arguments after the bound are passed to the fuzzer.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 BUILD_DIR SECONDS_OR_RUNS (e.g. 20s or 20000) [fuzzer args...]" >&2
  exit 2
fi
build_dir=$(mkdir -p "$1" && cd "$1" && pwd)
bound=$2
shift 2
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# CXX_FUZZ: the clang++ to use (default: clang++-14, else clang++).
CXX=
for c in ${CXX_FUZZ:-clang++-14 clang++}; do
  if command -v "$c" >/dev/null; then CXX=$(command -v "$c"); break; fi
done
if [ -z "$CXX" ]; then
  echo "SKIP: clang++ is not installed; the fuzzer needs libFuzzer" >&2
  exit 77
fi

out=$build_dir/fuzz
mkdir -p "$out/obj" "$out/corpus"

# Compiled with libstdc++, like the system yaml-cpp and Abseil it links.
flags=(-std=c++20 -g -O1 -fno-omit-frame-pointer
       -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
       -I"$src" -I"$src/broker/policy/include" -I"$src/common/include"
       $(pkg-config --cflags absl_status yaml-cpp libcrypto))
sources=("$src"/broker/policy/src/*.cc "$src/common/src/org_code.cc"
         "$src/tests/fuzz/policy_fuzzer.cc")
headers=("$src"/broker/policy/src/*.h "$src"/broker/policy/include/lienthong/policy/*.h
         "$src"/common/include/lienthong/common/*.h)
newest_header=$(ls -t "${headers[@]}" | head -1)

# Only what changed is recompiled (one file at a time: the machine is shared).
objects=()
relink=0
for s in "${sources[@]}"; do
  rel=${s#"$src"/}
  o=$out/obj/${rel//\//_}.o
  objects+=("$o")
  if [ ! -f "$o" ] || [ "$s" -nt "$o" ] || [ "$newest_header" -nt "$o" ]; then
    echo "clang++ $rel" >&2
    nice "$CXX" "${flags[@]}" -c "$s" -o "$o"
    relink=1
  fi
done
bin=$out/policy_fuzzer
if [ "$relink" = 1 ] || [ ! -x "$bin" ]; then
  echo "link $bin" >&2
  "$CXX" -fsanitize=fuzzer,address,undefined "${objects[@]}" -o "$bin" \
    $(pkg-config --libs absl_status absl_statusor absl_strings absl_str_format \
                        absl_flat_hash_map absl_synchronization absl_time absl_hash \
                        yaml-cpp libcrypto) -lpthread
fi

# Seeds: the committed corpus and the example policies (copied, so that the
# fuzzer adds its finds to the build directory only).
seeds=$out/seeds
rm -rf "$seeds"
mkdir -p "$seeds"
cp "$src"/tests/fuzz/corpus/policy/* "$seeds"/
for f in "$src"/deploy/policy/*.yaml; do
  [ -f "$f" ] && cp "$f" "$seeds/deploy-$(basename "$f")"
done

case $bound in
  *s) limit=(-max_total_time="${bound%s}") ;;
  *) limit=(-runs="$bound" -max_total_time=600) ;;
esac

cd "$out"
# One process, one core; inputs up to 8 KiB (policies are text).
exec nice "$bin" "${limit[@]}" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
  -dict="$src/tests/fuzz/policy.dict" -print_final_stats=1 \
  -artifact_prefix="$out/" "$@" "$out/corpus" "$seeds"
