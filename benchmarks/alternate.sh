#!/usr/bin/env bash
# Two builds side by side on a shared, drifting machine: runs
# benchmarks/run.sh with the same lienthong-bench arguments for build A,
# then build B, ROUNDS times, and prints each run's headline figure (the
# attachment throughput or the end-to-end documents/s), the CPU the broker
# and the load generator used, and the means:
#   benchmarks/alternate.sh ROUNDS BUILD_A BUILD_B [lienthong-bench args...]
# e.g. (a worktree of the commit before, built in /tmp/base/build):
#   benchmarks/alternate.sh 6 /tmp/base/build build --attachment-size 1GiB --attachments 3
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -ge 3 ] || { sed -n 2,9p "$0"; exit 2; }
ROUNDS=$1 A=$2 B=$3; shift 3
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS: a positive number, not '$ROUNDS'" >&2; exit 2; }
for build in "$A" "$B"; do
  [ -x "$build/broker/server/lienthongd" ] && [ -x "$build/benchmarks/lienthong-bench" ] ||
    { echo "$build: no lienthongd or lienthong-bench built there" >&2; exit 2; }
done
RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT
for round in $(seq 1 "$ROUNDS"); do
  for label in A B; do
    build=$A; [ "$label" = B ] && build=$B
    out=$( { /usr/bin/time -f "cpu %U %S" "$ROOT/benchmarks/run.sh" "$build" "$@" 2>&1; } 2>&1 ) ||
      { echo "$out" >&2; exit 1; }
    figure=$(echo "$out" | sed -n -e 's/.*send->receive throughput: *\([0-9.]*\).*/\1/p' \
                                  -e 's/.*end to end (received and acked): *\([0-9.]*\).*/\1/p' | head -1)
    cpu=$(echo "$out" | awk '/^cpu /{printf "%.1f", $2 + $3}')
    # Attachments: the CPU the SDK and the broker spent per GiB, without the
    # set-up that the whole run's CPU includes.
    per_gib=$(echo "$out" | sed -n 's/.*CPU per GiB sent and received: SDK \([0-9.]*\) s, broker \([0-9.]*\) s.*/\1 \2/p' |
              awk '{printf "%.2f", $1 + $2}')
    printf "round %d  %s  %10s  cpu %6s s%s\n" "$round" "$label" "$figure" "$cpu" \
           "${per_gib:+  ($per_gib s per GiB)}"
    echo "$label $figure $cpu ${per_gib:-0}" >> "$RESULTS"
  done
done
awk -v a="$A" -v b="$B" '{n[$1]++; f[$1]+=$2; c[$1]+=$3; g[$1]+=$4}
  END {printf "mean A (%s): %.1f, cpu %.1f s\nmean B (%s): %.1f, cpu %.1f s\nB/A: %.3f\n",
       a, f["A"]/n["A"], c["A"]/n["A"], b, f["B"]/n["B"], c["B"]/n["B"], f["B"]/f["A"]
       if (g["A"] > 0 && g["B"] > 0)
         printf "CPU per GiB (SDK and broker): A %.2f s, B %.2f s, B/A %.3f\n",
                g["A"]/n["A"], g["B"]/n["B"], g["B"]/g["A"]}' "$RESULTS"
