#!/usr/bin/env bash
# Revocation for the Liên Thông development PKI made by make-dev-pki.sh:
# revokes certificates and writes the CA's CRL into DIR/crl/ in OpenSSL
# hashed-directory form, the layout a broker's tls.crl_directory expects.
# Uses only the `openssl` command line of OpenSSL 3. NOT for production use.
set -euo pipefail

PROG=$(basename "$0")

usage() {
  cat <<EOF
Usage: $PROG [options] [CERT.pem ...]

Revokes each CERT.pem (issued by DIR/ca.pem) and writes a new CRL of the dev CA
into DIR/crl/. With no CERT, only writes a fresh CRL (the first time: an empty
one, so that a crl_directory exists before anything is revoked; later: to
renew the CRL before its nextUpdate).

Options:
  --out DIR                 the dev PKI directory holding ca.pem and ca.key
                            (default: ./pki)
  --reason R                revocation reason: unspecified, keyCompromise,
                            CACompromise, affiliationChanged, superseded,
                            cessationOfOperation (default: unspecified)
  --crl-days N              the CRL's validity (nextUpdate) in days (default: 30).
                            A broker refuses every peer once the CRL it holds
                            has passed its nextUpdate: re-run $PROG before then
  -h, --help                show this help

Output (DIR):
  crl/HASH.rN                    the CRLs, HASH = \`openssl crl -hash\` of the CA,
                                 N = 0, 1, 2, ...: each run adds the next N and
                                 never rewrites an older file (see below)
  ca-db/                         the CA database (index.txt, crlnumber, ca.cnf),
                                 created on first use; crl.pem is the newest CRL

Why a new file each time: OpenSSL (and so a running broker) remembers which
HASH.rN files of a hashed directory it has read and only looks for the next N;
a rewritten HASH.r0 would never be read again. Among the CRLs it holds it uses
the one with the latest lastUpdate, so the newest (which lists every revocation
so far) wins. Copy DIR/crl/ to the brokers as it is (e.g. rsync -a without
--delete); do not rename, rewrite or delete files a running broker has read.
EOF
}

die() {
  echo "$PROG: error: $*" >&2
  exit 1
}

# ---------------------------------------------------------------- arguments
OUT=./pki
REASON=unspecified
CRL_DAYS=30
CERTS=()

need_arg() {
  [[ $# -ge 2 && -n "$2" ]] || die "option $1 needs a value (see --help)"
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) need_arg "$@"; OUT=$2; shift 2 ;;
    --out=*) OUT=${1#*=}; shift ;;
    --reason) need_arg "$@"; REASON=$2; shift 2 ;;
    --reason=*) REASON=${1#*=}; shift ;;
    --crl-days) need_arg "$@"; CRL_DAYS=$2; shift 2 ;;
    --crl-days=*) CRL_DAYS=${1#*=}; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *) CERTS+=("$1"); shift ;;
  esac
done

# ---------------------------------------------------------------- validation
command -v openssl >/dev/null 2>&1 || die "openssl not found in PATH"
ossl_ver=$(openssl version)
if ! [[ $ossl_ver =~ ^OpenSSL\ ([0-9]+) ]] || ((BASH_REMATCH[1] < 3)); then
  die "OpenSSL 3 or newer is required (found: $ossl_ver)"
fi

[[ $CRL_DAYS =~ ^[1-9][0-9]*$ ]] || die "--crl-days must be a positive integer, got '$CRL_DAYS'"
case $REASON in
  unspecified | keyCompromise | CACompromise | affiliationChanged | superseded | cessationOfOperation) ;;
  *) die "invalid --reason '$REASON' (see --help)" ;;
esac

[[ -d $OUT ]] || die "$OUT: no such directory (make the PKI first: make-dev-pki.sh --out $OUT)"
OUT=$(cd "$OUT" && pwd)
[[ -s $OUT/ca.pem && -s $OUT/ca.key ]] ||
  die "$OUT must hold ca.pem and ca.key of the dev CA (make-dev-pki.sh --out $OUT)"

for cert in "${CERTS[@]}"; do
  [[ -r $cert ]] || die "$cert: cannot read"
  openssl x509 -in "$cert" -noout >/dev/null 2>&1 || die "$cert: not a PEM certificate"
  # Expired certificates may be revoked too: only the signature matters.
  openssl verify -no_check_time -CAfile "$OUT/ca.pem" -purpose any "$cert" >/dev/null 2>&1 ||
    die "$cert: not issued by $OUT/ca.pem"
done

# ---------------------------------------------------------------- helpers
TMP=$(mktemp -d "${TMPDIR:-/tmp}/lienthong-revoke.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# run_ossl ARGS...: run openssl quietly, show its output only on failure.
run_ossl() {
  if ! openssl "$@" >"$TMP/ossl.log" 2>&1; then
    echo "$PROG: 'openssl $*' failed:" >&2
    cat "$TMP/ossl.log" >&2
    exit 1
  fi
}

# ---------------------------------------------------------------- CA database
DB=$OUT/ca-db
CRL_DIR=$OUT/crl
mkdir -p "$DB" "$CRL_DIR"
[[ -e $DB/index.txt ]] || : >"$DB/index.txt"
[[ -e $DB/crlnumber ]] || echo 01 >"$DB/crlnumber"
cat >"$DB/ca.cnf" <<EOF
[ ca ]
default_ca = dev_ca
[ dev_ca ]
database = $DB/index.txt
crlnumber = $DB/crlnumber
certificate = $OUT/ca.pem
private_key = $OUT/ca.key
default_md = sha256
default_crl_days = $CRL_DAYS
unique_subject = no
crl_extensions = crl_ext
[ crl_ext ]
authorityKeyIdentifier = keyid:always
EOF

# ---------------------------------------------------------------- revoke
for cert in "${CERTS[@]}"; do
  serial=$(openssl x509 -in "$cert" -noout -serial | cut -d= -f2)
  subject=$(openssl x509 -in "$cert" -noout -subject -nameopt compat | sed 's/^subject=//')
  san=$(openssl x509 -in "$cert" -noout -ext subjectAltName 2>/dev/null | grep -o 'URI:[^,]*' | head -n 1 || true)
  if awk -F'\t' -v s="$serial" '$1 == "R" && toupper($4) == toupper(s) { found = 1 } END { exit !found }' "$DB/index.txt"; then
    echo "already revoked: $cert (serial $serial, $subject${san:+, $san})"
    continue
  fi
  run_ossl ca -batch -config "$DB/ca.cnf" -revoke "$cert" -crl_reason "$REASON"
  echo "revoked: $cert (serial $serial, $subject${san:+, $san}; reason $REASON)"
done

# ---------------------------------------------------------------- CRL
# A broker uses the CRL with the latest lastUpdate (one-second resolution):
# make sure this one is strictly later than the previous one.
hash=$(openssl x509 -in "$OUT/ca.pem" -noout -subject_hash)
last=$(ls "$CRL_DIR" | grep -E "^$hash\.r[0-9]+$" | sed "s/^$hash\.r//" | sort -n | tail -n 1 || true)
if [[ -n $last ]]; then
  prev=$(openssl crl -in "$CRL_DIR/$hash.r$last" -noout -lastupdate | cut -d= -f2)
  prev_epoch=$(date -u -d "$prev" +%s)
  while (($(date -u +%s) <= prev_epoch)); do sleep 0.2; done
  next=$((last + 1))
else
  next=0
fi
run_ossl ca -batch -config "$DB/ca.cnf" -gencrl -crldays "$CRL_DAYS" -out "$TMP/crl.pem"
crl_hash=$(openssl crl -in "$TMP/crl.pem" -noout -hash)
[[ $crl_hash == "$hash" ]] || die "CRL issuer hash $crl_hash differs from the CA's subject hash $hash"
# Written under a temporary name and renamed: a broker never reads half a file.
cp "$TMP/crl.pem" "$CRL_DIR/.$hash.r$next.tmp"
mv "$CRL_DIR/.$hash.r$next.tmp" "$CRL_DIR/$hash.r$next"
cp "$TMP/crl.pem" "$DB/crl.pem"

count=$(awk -F'\t' '$1 == "R"' "$DB/index.txt" | wc -l)
number=$(openssl crl -in "$TMP/crl.pem" -noout -crlnumber | cut -d= -f2)
next_update=$(openssl crl -in "$TMP/crl.pem" -noout -nextupdate | cut -d= -f2)
echo "wrote $CRL_DIR/$hash.r$next: CRL number $number of $(openssl x509 -in "$OUT/ca.pem" -noout -subject -nameopt compat | sed 's/^subject=//'), $count revoked, next update $next_update"
echo "brokers with tls.crl_directory = a copy of $CRL_DIR refuse the revoked certificates on their next new connection"
