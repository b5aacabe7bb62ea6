#!/usr/bin/env bash
# The README's run command: installs what is missing, builds, makes a
# development PKI and starts a small federation (deploy/federation.sh: a
# central broker and three provincial brokers, separate lienthongd processes
# on loopback), then shows what the system does, step by step:
#   1. a provincial committee (000.00.00.H49) reports to the centre
#      (000.00.00.G22): h49 -> central; the centre receives it and reports
#      business statuses, which travel back to the sender;
#   2. province H51 writes to province H49 through the centre (two hops);
#   3. the centre goes down; H49 and H50 keep working over their direct link;
#   4. H50's broker goes down; a document for it waits in h49's outbox and is
#      delivered when h50 returns (store and forward);
#   5. an AI-made personnel decision is held until the sending org's
#      approver approves it, then delivered with the approval; an AI-made
#      disciplinary decision is refused by the policy, which explains why;
#   6. a confidential report is sealed end to end by the sender's SDK: the
#      centre reads it, no broker's files hold its text;
#   7. every document is signed by its sender: the custody receipt and the
#      evidence of the first document are checked offline with only the CA,
#      and a tampered copy of the evidence is caught;
#   8. a 64 MiB scan travels as a stored attachment: streamed to broker
#      central in verified chunks, pushed to h49 before the document, and
#      downloaded and verified by 000.00.00.H49.
# From a terminal it then keeps the federation running until Ctrl-C.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

deploy/setup-debian.sh
deploy/setup-debian.sh --build build >/dev/null

DEMO="$ROOT/demo"
FEDDIR="$DEMO/federation"
BASE_PORT="${LIENTHONG_DEMO_PORT:-7443}"
FED=("$ROOT/deploy/federation.sh" --dir "$FEDDIR" --base-port "$BASE_PORT")
mkdir -p "$DEMO"
# A previous demo's brokers (same directory) are stopped and its data kept.
"${FED[@]}" stop >/dev/null 2>&1 || true
trap '"${FED[@]}" stop >/dev/null 2>&1 || true' EXIT
"${FED[@]}" start
# shellcheck source=/dev/null
source "$FEDDIR/env.sh"  # lt ORG|PERSON@BROKER lienthong-args...

# Waits (bounded) until broker $1 logs that its link to $2 is up.
wait_link() {
  for _ in $(seq 1 100); do
    grep -q "link to $2 .* up" "$FEDDIR/$1/broker.log" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "the link $1 -> $2 did not come up"; tail -5 "$FEDDIR/$1/broker.log"; exit 1
}
wait_link h49 central; wait_link h49 h50; wait_link h51 central; wait_link central h49
# Sends and prints the document id (exits if there is none).
send() {  # send ORG lienthong-send-args...
  local org=$1 out id; shift
  out=$(lt "$org" --json send "$@")
  id=$(echo "$out" | sed -n 's/.*"document_id": *"\([0-9A-Z]*\)".*/\1/p' | head -1)
  [ -n "$id" ] || { echo "no document id in: $out" >&2; exit 1; }
  echo "$id"
}

printf 'Kính gửi Văn phòng Trung ương,\nỦy ban nhân dân tỉnh báo cáo tình hình chuyển đổi số quý IV.\n' >"$DEMO/report.txt"

echo
echo "== 1. 000.00.00.H49 (broker h49) reports to 000.00.00.G22 (broker central)"
ID=$(send 000.00.00.H49 --to 000.00.00.G22 --subject "Báo cáo chuyển đổi số quý IV" \
  --number 123 --notation "BC-UBND" --type "Báo cáo" --signer "Nguyễn Văn A" \
  --issue-date "$(date +%F)" --urgency urgent --receipt "$DEMO/receipt.json" "$DEMO/report.txt")
FIRST=$ID
echo "sent $ID (signed by H49; h49's custody receipt in $DEMO/receipt.json)"
echo "-- 000.00.00.G22 receives it at broker central and reports arrived (01), assigned (04)"
lt 000.00.00.G22 receive --max 10 --wait 10 --out "$DEMO/inbox-G22"
lt 000.00.00.G22 status "$ID" arrived
lt 000.00.00.G22 status "$ID" assigned
sleep 1  # the statuses travel back central -> h49
echo "-- 000.00.00.H49 tracks it at its own broker: accepted, forwarded, delivered, statuses"
lt 000.00.00.H49 track "$ID"

echo
echo "== 2. 000.00.00.H51 (broker h51) writes to 000.00.00.H49: h51 -> central -> h49"
ID=$(send 000.00.00.H51 --to 000.00.00.H49 --subject "Phối hợp tổ chức hội nghị" --type "Công văn" "$DEMO/report.txt")
lt 000.00.00.H49 receive --max 10 --wait 10 --out "$DEMO/inbox-H49"
sleep 1
lt 000.00.00.H51 track "$ID"

echo
echo "== 3. the centre goes down (kill -9); H49 and H50 keep working on their direct link"
"${FED[@]}" kill central
ID=$(send 000.00.00.H49 --to 000.00.00.H50 --subject "Đề nghị phối hợp liên tỉnh" --type "Công văn" "$DEMO/report.txt")
lt 000.00.00.H50 receive --max 10 --wait 10 --out "$DEMO/inbox-H50"
sleep 1
lt 000.00.00.H49 track "$ID"
"${FED[@]}" restart central

echo
echo "== 4. broker h50 goes down; a document for H50 waits in h49's outbox"
"${FED[@]}" kill h50
ID=$(send 000.00.00.H49 --to 000.00.00.H50 --subject "Gửi khi tỉnh bạn mất kết nối" --type "Công văn" "$DEMO/report.txt")
lt operator@h49 admin peers
echo "-- h50 returns: the outbox drains, H50 receives the document"
"${FED[@]}" restart h50
lt 000.00.00.H50 receive --max 10 --wait 20 --out "$DEMO/inbox-H50"
sleep 1
lt 000.00.00.H49 track "$ID"

echo
echo "== 5. an AI-made personnel decision waits for a person's approval; an AI-made disciplinary one is refused"
OUT=$(lt 000.00.00.G22 --json send --to 000.00.00.H49 --subject "Quyết định điều động cán bộ (AI đề xuất)" \
  --type "Quyết định" --origin ai --decision personnel "$DEMO/report.txt")
ID=$(echo "$OUT" | sed -n 's/.*"document_id": *"\([0-9A-Z]*\)".*/\1/p' | head -1)
SHA=$(echo "$OUT" | sed -n 's/.*"content_sha256": *"\([0-9a-f]*\)".*/\1/p' | head -1)
[ -n "$ID" ] && [ -n "$SHA" ] || { echo "no document id or content hash in: $OUT"; exit 1; }
echo "sent $ID: held at broker central, delivered to nobody yet"
lt 000.00.00.G22 track "$ID"
echo "-- the approver of 000.00.00.G22 lists what waits (metadata and content hash, never the content)"
lt approver@central approvals list
lt approver@central approvals approve "$ID" --content-sha256 "$SHA" --comment "Đã rà soát, đồng ý ban hành"
echo "-- 000.00.00.H49 receives it with the approval attached"
lt 000.00.00.H49 receive --max 10 --wait 10 --out "$DEMO/inbox-H49"
sleep 1
lt 000.00.00.G22 track "$ID"
if lt 000.00.00.G22 send --to 000.00.00.H49 --subject "Quyết định kỷ luật (AI đề xuất)" \
     --type "Quyết định" --origin ai --decision disciplinary "$DEMO/report.txt"; then
  echo "the policy should have refused it"; exit 1
fi
echo "-- why (lienthong policy explain, offline, on the federation's policy file)"
"$ROOT/build/client-sdk/lienthong" policy explain --policy "$ROOT/deploy/policy/lienthong-policy.yaml" \
  --flow '{sender: 000.00.00.G22, recipient: 000.00.00.H49, origin: ai, decision_category: disciplinary}'

echo
echo "== 6. a confidential report, sealed end to end: only the centre can read it"
echo "-- 000.00.00.G22 publishes its encryption certificate at broker central (announced to every broker)"
lt 000.00.00.G22 keys publish
MARKER="Số liệu mật $(date +%s)"
printf 'Kính gửi Văn phòng Trung ương,\nBáo cáo mật: %s.\n' "$MARKER" >"$DEMO/confidential.txt"
ID=""
for _ in $(seq 1 40); do  # until h49 has heard of the certificate (seconds)
  ID=$(send 000.00.00.H49 --to 000.00.00.G22 --subject "Báo cáo mật về nhân sự" \
    --type "Báo cáo" --classification confidential "$DEMO/confidential.txt" 2>/dev/null) && break
  sleep 0.5
done
[ -n "$ID" ] || { lt 000.00.00.H49 send --to 000.00.00.G22 --subject x --classification confidential "$DEMO/confidential.txt"; exit 1; }
echo "sent $ID, sealed by the sender's SDK for 000.00.00.G22"
lt 000.00.00.G22 receive --max 10 --wait 10 --out "$DEMO/inbox-G22"
if grep -rqF "$MARKER" "$FEDDIR"/*/data; then
  echo "the text of the confidential report is in a broker's files"; exit 1
fi
echo "-- its text is in G22's inbox ($DEMO/inbox-G22) and in no broker's files (h49, central)"
echo "-- the directory as broker central sees it (E2E CERT: published encryption certificates)"
lt operator@central admin directory

echo
echo "== 7. signatures and evidence: checked offline with nothing but the CA"
echo "-- the custody receipt broker h49 signed when it took the first document"
"$ROOT/build/client-sdk/lienthong" --ca "$FEDDIR/pki/ca.pem" verify "$DEMO/receipt.json"
echo "-- the evidence of it at broker central: H49's signature, central's receipt, statuses, audit entries"
lt 000.00.00.G22 evidence "$FIRST" --out "$DEMO/evidence.json"
"$ROOT/build/client-sdk/lienthong" --ca "$FEDDIR/pki/ca.pem" verify "$DEMO/evidence.json"
echo "-- one byte of the evidence changed: caught"
python3 - "$DEMO/evidence.json" "$DEMO/evidence-tampered.json" <<'EOF'
import base64, json, sys
e = json.load(open(sys.argv[1]))
b = bytearray(base64.b64decode(e["evidence"]))
b[len(b) // 2] ^= 1
e["evidence"] = base64.b64encode(bytes(b)).decode()
json.dump(e, open(sys.argv[2], "w"))
EOF
if "$ROOT/build/client-sdk/lienthong" --ca "$FEDDIR/pki/ca.pem" verify "$DEMO/evidence-tampered.json"; then
  echo "a tampered evidence file verified"; exit 1
fi

echo
echo "== 8. a large scan as a stored attachment: central -> h49, chunked, verified, resumable"
head -c $((64 << 20)) /dev/urandom > "$DEMO/scan.bin"
echo "Công văn kèm bản quét" > "$DEMO/cover.txt"
lt 000.00.00.G22 send --to 000.00.00.H49 --subject "Công văn kèm bản quét" \
  --attach "$DEMO/scan.bin" "$DEMO/cover.txt"
rm -rf "$DEMO/inbox-H49-scan"
lt 000.00.00.H49 receive --max 10 --wait 10 --out "$DEMO/inbox-H49-scan"
if ! cmp -s "$DEMO/scan.bin" "$(ls "$DEMO"/inbox-H49-scan/*.scan.bin)"; then
  echo "the scan H49 downloaded differs from the one G22 sent"; exit 1
fi
echo "-- H49's copy is identical (SHA-256 checked by the SDK against G22's signature)"

if [ -t 0 ] && [ -z "${CI:-}" ]; then
  echo
  echo "== the federation keeps running (configurations, data and logs in $FEDDIR)."
  echo "   source $FEDDIR/env.sh and try: lt 000.00.00.H50 send --to 000.00.00.G22 --subject Thử FILE"
  echo "   Ctrl-C stops it."
  trap '"${FED[@]}" stop >/dev/null 2>&1 || true; exit 0' INT TERM
  while sleep 3600; do :; done
fi
