#!/usr/bin/env bash
# The README's run command: installs what is missing, builds, makes a
# development PKI, starts a broker on its embedded defaults, and sends an
# official document from a provincial committee (000.00.00.H49) to a central
# body (000.00.00.G22): send, receive, acknowledge, report statuses, track;
# then a flow the policy forbids, refused and explained.
# With a terminal it then keeps the broker running until Ctrl-C.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

deploy/setup-debian.sh
deploy/setup-debian.sh --build build >/dev/null

DEMO="$ROOT/demo"
mkdir -p "$DEMO"
deploy/pki/make-dev-pki.sh --out "$DEMO/pki" >/dev/null
BIN="$ROOT/build"
PORT="${LIENTHONG_DEMO_PORT:-7443}"

"$BIN/broker/server/lienthongd" --pki "$DEMO/pki" --listen "127.0.0.1:$PORT" \
  --data-dir "$DEMO/data" >"$DEMO/broker.out" 2>"$DEMO/broker.log" &
BROKER=$!
trap 'kill $BROKER 2>/dev/null; wait $BROKER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  grep -q "listening on" "$DEMO/broker.out" 2>/dev/null && break
  kill -0 $BROKER 2>/dev/null || { cat "$DEMO/broker.log"; exit 1; }
  sleep 0.1
done
grep -q "listening on" "$DEMO/broker.out" || { echo "broker did not start"; cat "$DEMO/broker.log"; exit 1; }
echo "== broker: $(cat "$DEMO/broker.out") (log: $DEMO/broker.log)"

as() {  # as ORG lienthong-args...
  local org=$1; shift
  "$BIN/client-sdk/lienthong" --endpoint "127.0.0.1:$PORT" --ca "$DEMO/pki/ca.pem" \
    --cert "$DEMO/pki/orgs/$org.pem" --key "$DEMO/pki/orgs/$org.key" "$@"
}

printf 'Kính gửi Văn phòng Trung ương,\nỦy ban nhân dân tỉnh báo cáo tình hình chuyển đổi số quý IV.\n' >"$DEMO/report.txt"
echo "== 000.00.00.H49 sends a report to 000.00.00.G22"
SENT=$(as 000.00.00.H49 --json send --to 000.00.00.G22 --subject "Báo cáo chuyển đổi số quý IV" \
  --number 123 --notation "BC-UBND" --type "Báo cáo" --signer "Nguyễn Văn A" \
  --issue-date "$(date +%F)" --urgency urgent "$DEMO/report.txt")
echo "$SENT"
ID=$(echo "$SENT" | sed -n 's/.*"document_id": *"\([0-9A-Z]*\)".*/\1/p' | head -1)
[ -n "$ID" ] || { echo "no document id in the answer"; exit 1; }

echo "== 000.00.00.G22's inbox"
as 000.00.00.G22 inbox
echo "== 000.00.00.G22 receives and acknowledges it"
as 000.00.00.G22 receive --max 10 --wait 5 --out "$DEMO/inbox"
echo "== 000.00.00.G22 reports: arrived (01), then assigned (04)"
as 000.00.00.G22 status "$ID" arrived
as 000.00.00.G22 status "$ID" assigned
echo "== 000.00.00.H49 tracks what it sent"
as 000.00.00.H49 track "$ID"

echo "== policy: an AI-made personnel decision is refused (deny by default, forbid beats permit)"
if as 000.00.00.G22 send --to 000.00.00.H49 --subject "Quyết định điều động cán bộ" \
     --type "Quyết định" --origin ai --decision personnel "$DEMO/report.txt"; then
  echo "the policy should have refused it"; exit 1
fi
echo "== policy: why (lienthong policy explain, offline, on the embedded development policy)"
"$BIN/client-sdk/lienthong" policy explain --policy "$ROOT/deploy/policy/lienthong-policy.yaml" \
  --flow '{sender: 000.00.00.G22, recipient: 000.00.00.H49, origin: ai, decision_category: personnel}'

if [ -t 0 ] && [ -z "${CI:-}" ]; then
  echo "== the broker keeps running on 127.0.0.1:$PORT (PKI in $DEMO/pki); Ctrl-C stops it"
  wait $BROKER
fi
