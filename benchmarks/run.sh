#!/usr/bin/env bash
# Runs lienthong-bench against a fresh broker on this machine:
#   benchmarks/run.sh [BUILD_DIR] [lienthong-bench args...]
# Makes a dev PKI and a data directory under a temp dir, starts lienthongd on
# loopback, runs the benchmark with the broker's pid (for its peak RSS), stops
# the broker and removes the temp dir. BULK=1 in the environment: the broker
# also serves its bulk path and the benchmark moves attachments there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build}"; shift || true
WORK="$(mktemp -d /tmp/lienthong-bench.XXXXXX)"
trap 'kill $BROKER 2>/dev/null; wait $BROKER 2>/dev/null; rm -rf "$WORK"' EXIT
"$ROOT/deploy/pki/make-dev-pki.sh" --out "$WORK/pki" >/dev/null
"$BUILD/broker/server/lienthongd" --pki "$WORK/pki" --listen 127.0.0.1:0 \
  --data-dir "$WORK/data" ${BULK:+--bulk-listen 127.0.0.1:0} >"$WORK/out" 2>"$WORK/log" &
BROKER=$!
for _ in $(seq 1 100); do grep -q "listening on" "$WORK/out" && break; sleep 0.1; done
ADDR=$(sed -n 's/.*listening on //p' "$WORK/out")
[ -n "$ADDR" ] || { cat "$WORK/log"; exit 1; }
BULK_ARGS=()
if [ -n "${BULK:-}" ]; then
  BULK_ARGS=(--bulk-port "$(sed -n 's/.*bulk path on .*:\([0-9]*\)$/\1/p' "$WORK/out")")
fi
"$BUILD/benchmarks/lienthong-bench" --endpoint "$ADDR" --pki "$WORK/pki" --broker-pid "$BROKER" "${BULK_ARGS[@]}" "$@"
