#!/usr/bin/env bash
# Throughput and per-hop latency across brokers, side by side in one run:
#   benchmarks/federation.sh [BUILD_DIR] [lienthong-bench args...]
# Starts the local federation (deploy/federation.sh: central, h49, h50, h51
# on loopback, fresh PKI and data under a temp dir) and runs lienthong-bench
# three times with the sender 000.00.00.H49 at h49:
#   1 broker   → 000.01.23.H49 at h49           (no hop)
#   2 brokers  → 000.00.00.H50 at h50           (h49 → h50, direct link)
#   3 brokers  → 000.00.00.H51 at h51           (h49 → central → h51)
# first at a fixed offered rate (latency; --latency-rate, default 1000/s),
# then as fast as possible (throughput: documents received and acknowledged
# at the far end inside the measured window), waiting for every outbox to
# drain between runs, and prints the ratios and what each hop adds to the
# median send→receive latency.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build}"; shift || true
LATENCY_RATE=1000
ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --latency-rate) LATENCY_RATE=$2; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
WORK="$(mktemp -d /tmp/lienthong-fedbench.XXXXXX)"
BASE_PORT=$((20000 + RANDOM % 20000))
FED=("$ROOT/deploy/federation.sh" --dir "$WORK" --base-port "$BASE_PORT" --bin "$BUILD")
cleanup() { "${FED[@]}" stop >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT
"${FED[@]}" start >/dev/null
# Wait until h49 has its links (bounded).
for _ in $(seq 1 50); do
  grep -q "link to central .* up" "$WORK/h49/broker.log" 2>/dev/null &&
    grep -q "link to h50 .* up" "$WORK/h49/broker.log" 2>/dev/null &&
    grep -q "link to h51 .* up" "$WORK/central/broker.log" 2>/dev/null && break
  sleep 0.2
done

H49=127.0.0.1:$((BASE_PORT + 1)) H50=127.0.0.1:$((BASE_PORT + 2)) H51=127.0.0.1:$((BASE_PORT + 3))
BENCH=("$BUILD/benchmarks/lienthong-bench" --pki "$WORK/pki" --endpoint "$H49"
       --sender-org 000.00.00.H49)
pid() { cat "$WORK/$1/pid"; }

ADMIN=("$BUILD/client-sdk/lienthong" --ca "$WORK/pki/ca.pem"
       --cert "$WORK/pki/persons/operator.pem" --key "$WORK/pki/persons/operator.key")
# Waits (at most 120 s) until no broker has anything left in an outbox or a
# return queue, so that one run's backlog does not load the next.
drain() {
  local port busy
  for _ in $(seq 1 240); do
    busy=0
    for port in "$BASE_PORT" $((BASE_PORT + 1)) $((BASE_PORT + 2)) $((BASE_PORT + 3)); do
      if "${ADMIN[@]}" --endpoint "127.0.0.1:$port" admin peers --json |
          grep -qE '"(outbox|returns)":"[1-9]'; then
        busy=1
      fi
    done
    [ "$busy" = 0 ] && return 0
    sleep 0.5
  done
  echo "federation.sh: the federation did not drain within 120 s" >&2
}

run() {  # run LABEL RECIPIENT RECEIVE_ENDPOINT BROKER_PIDS extra-args...
  local label=$1 recipient=$2 rx=$3 pids=$4; shift 4
  local out
  drain
  out=$("${BENCH[@]}" --recipient "$recipient" --receive-endpoint "$rx" \
        --broker-pid "$pids" "$@" "${ARGS[@]}")
  echo "== $label" >&2
  echo "$out" >&2
  echo "$out"
}
docs_per_s() { sed -n 's/^ *end to end (received and acked): *\([0-9.]*\) docs\/s.*/\1/p' | head -1; }
p50_e2e() { sed -n 's/^ *end-to-end latency *p50 \([0-9.]*\) ms.*/\1/p' | head -1; }

echo "-- latency at $LATENCY_RATE docs/s offered" >&2
P1=$(pid h49) P2="$(pid h49),$(pid h50)" P3="$(pid h49),$(pid central),$(pid h51)"
L1=$(run "1 broker" 000.01.23.H49 "$H49" "$P1" --rate "$LATENCY_RATE" | p50_e2e)
L2=$(run "2 brokers (h49 → h50)" 000.00.00.H50 "$H50" "$P2" --rate "$LATENCY_RATE" | p50_e2e)
L3=$(run "3 brokers (h49 → central → h51)" 000.00.00.H51 "$H51" "$P3" --rate "$LATENCY_RATE" | p50_e2e)
echo "-- throughput (as fast as possible)" >&2
T1=$(run "1 broker" 000.01.23.H49 "$H49" "$P1" | docs_per_s)
T2=$(run "2 brokers (h49 → h50)" 000.00.00.H50 "$H50" "$P2" | docs_per_s)
T3=$(run "3 brokers (h49 → central → h51)" 000.00.00.H51 "$H51" "$P3" | docs_per_s)

awk -v t1="$T1" -v t2="$T2" -v t3="$T3" -v l1="$L1" -v l2="$L2" -v l3="$L3" 'BEGIN {
  printf "%-34s %12s %8s %16s %14s\n", "PATH", "DOCS/S", "RATIO", "P50 SEND→RECV", "ADDED/HOP"
  printf "%-34s %12.0f %7.0f%% %13.2f ms %14s\n", "1 broker", t1, 100, l1, "-"
  printf "%-34s %12.0f %7.0f%% %13.2f ms %11.2f ms\n", "2 brokers (h49 → h50)", t2, 100*t2/t1, l2, (l2-l1)
  printf "%-34s %12.0f %7.0f%% %13.2f ms %11.2f ms\n", "3 brokers (h49 → central → h51)", t3, 100*t3/t1, l3, (l3-l1)/2
}'
