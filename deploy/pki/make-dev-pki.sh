#!/usr/bin/env bash
# Development PKI for Liên Thông: a throwaway root CA plus SPIFFE-style leaf
# certificates for brokers, organizations and persons. Uses only the `openssl`
# command line of OpenSSL 3. NOT for production use.
set -euo pipefail

PROG=$(basename "$0")

usage() {
  cat <<EOF
Usage: $PROG [options]

Creates a development PKI (ECDSA P-256, SHA-256) for Liên Thông.

Options:
  --out DIR                 output directory (default: ./pki)
  --trust-domain TD         SPIFFE trust domain (default: lienthong.local)
  --days N                  validity of leaf certificates in days (default: 365);
                            a newly created root CA is valid max(N, 3650) days
  --broker NAME[:h1,h2]     broker certificate (repeatable; default: central).
                            Extra hosts after ':' are added as SANs: IP
                            addresses as IP:, anything else as DNS:
  --org CODE                organization certificate (repeatable; default:
                            000.00.00.G22 000.00.00.H49 000.00.00.H50 000.01.23.H49)
                            CODE must match ^[0-9]{3}\.[0-9]{2}\.[0-9]{2}\.[A-Z][0-9]{2}$
  --person ID               person certificate (repeatable; default: operator auditor approver)
  --force                   re-issue leaf certificates that already exist
                            (the CA in DIR is always reused if present)
  --test-extras             also create deliberately bad certificates in DIR/bad/
                            for negative tests (see below)
  -h, --help                show this help

Output (DIR):
  ca.key, ca.pem                 root CA "/O=Lien Thong Dev/CN=Lien Thong Dev Root CA"
  brokers/NAME.{key,pem}         URI spiffe://TD/broker/NAME + DNS:localhost,
                                 IP:127.0.0.1, IP:::1 (+ extra hosts);
                                 EKU serverAuth, clientAuth
  orgs/CODE.{key,pem}            URI spiffe://TD/org/CODE only; EKU clientAuth; CN=CODE
  orgs/CODE.enc.{key,pem}        the org's end-to-end encryption certificate: the
                                 same URI SAN, key usage keyAgreement only, no EKU
  persons/ID.{key,pem}           URI spiffe://TD/person/ID only; EKU clientAuth

With --test-extras, DIR/bad/ additionally holds:
  foreign-ca.{pem,key}           another, unrelated root CA
  foreign-org.{pem,key}          org 000.00.00.H49 signed by the foreign CA
  expired-org.{pem,key}          org 000.00.00.H49 signed by the real CA, valid only
                                 2020-01-01 .. 2020-02-01 (expired)
  nosan-org.{pem,key}            CN=000.00.00.H49 signed by the real CA, no SAN at all
  twosan-org.{pem,key}           two URI SANs: spiffe://TD/org/000.00.00.H49 and
                                 spiffe://TD/org/000.00.00.H50

Re-running is idempotent: an existing CA is reused and existing leaf
certificates are kept unless --force is given. An existing leaf that no longer
verifies against the CA (e.g. the CA was replaced, or it expired) or lacks a
wanted SAN (e.g. another --trust-domain or broker host) is re-issued.
Key files are created with mode 0600.
EOF
}

die() {
  echo "$PROG: error: $*" >&2
  exit 1
}

# ---------------------------------------------------------------- arguments
OUT=./pki
TD=lienthong.local
DAYS=365
FORCE=0
EXTRAS=0
BROKERS=()
ORGS=()
PERSONS=()

need_arg() {
  [[ $# -ge 2 && -n "$2" ]] || die "option $1 needs a value (see --help)"
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) need_arg "$@"; OUT=$2; shift 2 ;;
    --out=*) OUT=${1#*=}; shift ;;
    --trust-domain) need_arg "$@"; TD=$2; shift 2 ;;
    --trust-domain=*) TD=${1#*=}; shift ;;
    --days) need_arg "$@"; DAYS=$2; shift 2 ;;
    --days=*) DAYS=${1#*=}; shift ;;
    --broker) need_arg "$@"; BROKERS+=("$2"); shift 2 ;;
    --broker=*) BROKERS+=("${1#*=}"); shift ;;
    --org) need_arg "$@"; ORGS+=("$2"); shift 2 ;;
    --org=*) ORGS+=("${1#*=}"); shift ;;
    --person) need_arg "$@"; PERSONS+=("$2"); shift 2 ;;
    --person=*) PERSONS+=("${1#*=}"); shift ;;
    --force) FORCE=1; shift ;;
    --test-extras) EXTRAS=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

[[ ${#BROKERS[@]} -gt 0 ]] || BROKERS=(central)
[[ ${#ORGS[@]} -gt 0 ]] || ORGS=(000.00.00.G22 000.00.00.H49 000.00.00.H50 000.01.23.H49)
[[ ${#PERSONS[@]} -gt 0 ]] || PERSONS=(operator auditor approver)

# ---------------------------------------------------------------- validation
command -v openssl >/dev/null 2>&1 || die "openssl not found in PATH"
ossl_ver=$(openssl version)
if ! [[ $ossl_ver =~ ^OpenSSL\ ([0-9]+) ]] || ((BASH_REMATCH[1] < 3)); then
  die "OpenSSL 3 or newer is required (found: $ossl_ver)"
fi

[[ $DAYS =~ ^[1-9][0-9]*$ ]] || die "--days must be a positive integer, got '$DAYS'"
# SPIFFE trust domain: lowercase letters, digits, dots, dashes, underscores.
[[ $TD =~ ^[a-z0-9._-]+$ ]] ||
  die "invalid trust domain '$TD' (allowed: lowercase letters, digits, '.', '-', '_')"

ORG_RE='^[0-9]{3}\.[0-9]{2}\.[0-9]{2}\.[A-Z][0-9]{2}$'
NAME_RE='^[A-Za-z0-9][A-Za-z0-9._-]*$'
IPV4_RE='^[0-9]{1,3}(\.[0-9]{1,3}){3}$'
DNS_RE='^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$'

for code in "${ORGS[@]}"; do
  [[ $code =~ $ORG_RE ]] ||
    die "invalid organization code '$code': expected the format V1V2V3.Z1Z2.Y1Y2.X, e.g. 000.00.00.H49 (regex $ORG_RE)"
done
for p in "${PERSONS[@]}"; do
  [[ $p =~ $NAME_RE ]] || die "invalid person id '$p' (allowed: letters, digits, '.', '-', '_')"
done
for b in "${BROKERS[@]}"; do
  name=${b%%:*}
  [[ $name =~ $NAME_RE ]] || die "invalid broker name '$name' in '--broker $b' (allowed: letters, digits, '.', '-', '_')"
  if [[ $b == *:* ]]; then
    IFS=',' read -r -a hosts <<<"${b#*:}"
    for h in "${hosts[@]}"; do
      [[ -z $h || $h =~ $IPV4_RE || $h == *:* || $h =~ $DNS_RE ]] ||
        die "invalid host '$h' in '--broker $b'"
    done
  fi
done

# ---------------------------------------------------------------- helpers
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/lienthong-pki.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# Minimal config for `openssl req`, so the system openssl.cnf (and its default
# extensions) never leak into our certificates.
cat >"$TMP/req.cnf" <<'EOF'
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF

SUMMARY=()
note() { SUMMARY+=("$1"); }

# run_ossl ARGS...: run openssl quietly, show its output only on failure.
run_ossl() {
  if ! openssl "$@" >"$TMP/ossl.log" 2>&1; then
    echo "$PROG: 'openssl $*' failed:" >&2
    cat "$TMP/ossl.log" >&2
    exit 1
  fi
}

# new_key PATH: ECDSA P-256 private key (PKCS#8 PEM), mode 0600.
new_key() {
  local path=$1
  rm -f "$path"
  (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -out "$path" 2>"$TMP/ossl.log") || {
    cat "$TMP/ossl.log" >&2
    die "key generation failed for $path"
  }
  chmod 600 "$path"
}

# rand_serial: positive random 127-bit serial number as 0x... hex.
rand_serial() {
  local hex
  hex=$(openssl rand -hex 16)
  # Clear the top bit so the serial never needs a sign-padding octet.
  printf '0x%x%s' $((0x${hex:0:1} & 7)) "${hex:1}"
}

# leaf_ext_file PATH EKU SAN...: write an x509 extension config (section [leaf]).
# EKU "-" writes none; LEAF_KU (default digitalSignature) sets the key usage.
# With no SAN arguments, no subjectAltName is written at all.
leaf_ext_file() {
  local path=$1 eku=$2
  shift 2
  {
    echo "[ leaf ]"
    echo "basicConstraints = critical, CA:FALSE"
    echo "keyUsage = critical, ${LEAF_KU:-digitalSignature}"
    [[ $eku == - ]] || echo "extendedKeyUsage = $eku"
    echo "subjectKeyIdentifier = hash"
    echo "authorityKeyIdentifier = keyid:always"
    if [[ $# -gt 0 ]]; then
      echo "subjectAltName = @alt"
      echo "[ alt ]"
      local san typ val
      local -A count=()
      for san in "$@"; do
        typ=${san%%:*}
        val=${san#*:}
        count[$typ]=$((${count[$typ]:-0} + 1))
        echo "$typ.${count[$typ]} = $val"
      done
    fi
  } >"$path"
}

# make_ca KEY PEM SUBJECT DAYS: self-signed ECDSA P-256 root.
make_ca() {
  local key=$1 pem=$2 subj=$3 days=$4
  new_key "$key"
  run_ossl req -x509 -new -config "$TMP/req.cnf" -extensions v3_ca \
    -key "$key" -sha256 -days "$days" -subj "$subj" -set_serial "$(rand_serial)" \
    -out "$pem"
}

# issue CA_PEM CA_KEY KEY PEM SUBJECT EKU SAN...: new key + cert signed by CA.
issue() {
  local ca_pem=$1 ca_key=$2 key=$3 pem=$4 subj=$5 eku=$6
  shift 6
  new_key "$key"
  run_ossl req -new -config "$TMP/req.cnf" -key "$key" -subj "$subj" -out "$TMP/leaf.csr"
  leaf_ext_file "$TMP/leaf.ext" "$eku" "$@"
  run_ossl x509 -req -in "$TMP/leaf.csr" -CA "$ca_pem" -CAkey "$ca_key" \
    -set_serial "$(rand_serial)" -sha256 -days "$DAYS" \
    -extfile "$TMP/leaf.ext" -extensions leaf -out "$pem"
}

CA_NEW=0

# keep_leaf KEY PEM verify|noverify SAN...: true if the existing pair should be
# kept: not --force, CA not just created, both files present, (with "verify")
# the cert verifies against DIR/ca.pem, and every wanted URI/DNS/IPv4 SAN is in
# it (so changing --trust-domain or broker hosts re-issues). IPv6 SANs are not
# compared (OpenSSL prints them expanded).
keep_leaf() {
  local key=$1 pem=$2 check=$3
  shift 3
  [[ $FORCE -eq 0 && $CA_NEW -eq 0 && -s $key && -s $pem ]] || return 1
  if [[ $check == verify ]] &&
    ! openssl verify -CAfile "$OUT/ca.pem" -purpose any "$pem" >/dev/null 2>&1; then
    echo "$PROG: note: $pem does not verify against $OUT/ca.pem; re-issuing" >&2
    return 1
  fi
  if [[ $# -gt 0 ]]; then
    local have san want
    have=$(openssl x509 -in "$pem" -noout -ext subjectAltName 2>/dev/null | tail -n +2 | tr -d ' ')
    have=",$have,"
    for san in "$@"; do
      case $san in
        URI:* | DNS:*) want=$san ;;
        IP:*:*) continue ;;
        IP:*) want="IPAddress:${san#IP:}" ;;
      esac
      if [[ $have != *",$want,"* ]]; then
        echo "$PROG: note: $pem lacks SAN $san; re-issuing" >&2
        return 1
      fi
    done
  fi
  return 0
}

# leaf KIND PATH_BASE SUBJECT EKU SAN...
leaf() {
  local kind=$1 base=$2 subj=$3 eku=$4
  shift 4
  if keep_leaf "$base.key" "$base.pem" verify "$@"; then
    note "kept    $kind ${base#"$OUT"/}.pem"
  else
    issue "$OUT/ca.pem" "$OUT/ca.key" "$base.key" "$base.pem" "$subj" "$eku" "$@"
    note "issued  $kind ${base#"$OUT"/}.pem  ($*)"
  fi
}

# ---------------------------------------------------------------- root CA
CA_SUBJ="/O=Lien Thong Dev/CN=Lien Thong Dev Root CA"
CA_DAYS=$((DAYS > 3650 ? DAYS : 3650))
if [[ -s $OUT/ca.key && -s $OUT/ca.pem ]]; then
  openssl x509 -in "$OUT/ca.pem" -noout >/dev/null 2>&1 || die "$OUT/ca.pem is not a certificate"
  note "reused  CA $OUT/ca.pem"
elif [[ -e $OUT/ca.key || -e $OUT/ca.pem ]]; then
  die "$OUT has only one of ca.key / ca.pem; remove it or restore the other"
else
  make_ca "$OUT/ca.key" "$OUT/ca.pem" "$CA_SUBJ" "$CA_DAYS"
  CA_NEW=1
  note "created CA $OUT/ca.pem (valid $CA_DAYS days)"
fi

# ---------------------------------------------------------------- leaves
mkdir -p "$OUT/brokers" "$OUT/orgs" "$OUT/persons"

for b in "${BROKERS[@]}"; do
  name=${b%%:*}
  sans=("URI:spiffe://$TD/broker/$name" "DNS:localhost" "IP:127.0.0.1" "IP:::1")
  if [[ $b == *:* ]]; then
    IFS=',' read -r -a hosts <<<"${b#*:}"
    for h in "${hosts[@]}"; do
      [[ -n $h ]] || continue
      if [[ $h =~ $IPV4_RE || $h == *:* ]]; then
        san="IP:$h"
      else
        san="DNS:$h"
      fi
      [[ " ${sans[*]} " == *" $san "* ]] || sans+=("$san")
    done
  fi
  leaf broker "$OUT/brokers/$name" "/O=Lien Thong Dev/OU=broker/CN=$name" \
    "serverAuth, clientAuth" "${sans[@]}"
done

for code in "${ORGS[@]}"; do
  leaf org "$OUT/orgs/$code" "/O=Lien Thong Dev/OU=org/CN=$code" \
    "clientAuth" "URI:spiffe://$TD/org/$code"
  # The end-to-end encryption certificate: same identity, its own key, for
  # key agreement only.
  LEAF_KU=keyAgreement leaf "org encryption" "$OUT/orgs/$code.enc" \
    "/O=Lien Thong Dev/OU=org-encryption/CN=$code" "-" "URI:spiffe://$TD/org/$code"
done

for p in "${PERSONS[@]}"; do
  leaf person "$OUT/persons/$p" "/O=Lien Thong Dev/OU=person/CN=$p" \
    "clientAuth" "URI:spiffe://$TD/person/$p"
done

# ---------------------------------------------------------------- test extras
if [[ $EXTRAS -eq 1 ]]; then
  BAD=$OUT/bad
  mkdir -p "$BAD"
  H49=000.00.00.H49
  H50=000.00.00.H50
  ORG_SUBJ="/O=Lien Thong Dev/OU=org/CN=$H49"

  # Foreign root CA and an org certificate it signed.
  if keep_leaf "$BAD/foreign-ca.key" "$BAD/foreign-ca.pem" noverify &&
    keep_leaf "$BAD/foreign-org.key" "$BAD/foreign-org.pem" noverify \
      "URI:spiffe://$TD/org/$H49"; then
    note "kept    bad/foreign-ca.pem, bad/foreign-org.pem"
  else
    make_ca "$BAD/foreign-ca.key" "$BAD/foreign-ca.pem" \
      "/O=Foreign Dev/CN=Foreign Dev Root CA" "$CA_DAYS"
    issue "$BAD/foreign-ca.pem" "$BAD/foreign-ca.key" "$BAD/foreign-org.key" \
      "$BAD/foreign-org.pem" "$ORG_SUBJ" "clientAuth" "URI:spiffe://$TD/org/$H49"
    note "issued  bad/foreign-ca.pem, bad/foreign-org.pem (org $H49 signed by a foreign CA)"
  fi

  # Expired org certificate. OpenSSL 3.0's `x509 -req` cannot set explicit
  # validity dates (-not_before/-not_after arrived in 3.4), so use a throwaway
  # `openssl ca` setup that accepts -startdate/-enddate.
  if keep_leaf "$BAD/expired-org.key" "$BAD/expired-org.pem" noverify \
    "URI:spiffe://$TD/org/$H49"; then
    note "kept    bad/expired-org.pem"
  else
    cadir=$TMP/expired-ca
    mkdir -p "$cadir/newcerts"
    : >"$cadir/index.txt"
    cat >"$cadir/ca.cnf" <<EOF
[ ca ]
default_ca = dev_ca
[ dev_ca ]
database = $cadir/index.txt
new_certs_dir = $cadir/newcerts
rand_serial = yes
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
preserve = yes
[ policy_any ]
organizationName = optional
organizationalUnitName = optional
commonName = supplied
EOF
    leaf_ext_file "$cadir/leaf.ext" "clientAuth" "URI:spiffe://$TD/org/$H49"
    new_key "$BAD/expired-org.key"
    run_ossl req -new -config "$TMP/req.cnf" -key "$BAD/expired-org.key" -subj "$ORG_SUBJ" -out "$cadir/leaf.csr"
    run_ossl ca -batch -notext -config "$cadir/ca.cnf" \
      -cert "$OUT/ca.pem" -keyfile "$OUT/ca.key" -outdir "$cadir/newcerts" \
      -startdate 20200101000000Z -enddate 20200201000000Z \
      -extfile "$cadir/leaf.ext" -extensions leaf \
      -in "$cadir/leaf.csr" -out "$BAD/expired-org.pem"
    note "issued  bad/expired-org.pem (org $H49, valid 2020-01-01..2020-02-01 only)"
  fi

  # No SAN at all.
  if keep_leaf "$BAD/nosan-org.key" "$BAD/nosan-org.pem" noverify; then
    note "kept    bad/nosan-org.pem"
  else
    issue "$OUT/ca.pem" "$OUT/ca.key" "$BAD/nosan-org.key" "$BAD/nosan-org.pem" \
      "$ORG_SUBJ" "clientAuth"
    note "issued  bad/nosan-org.pem (CN=$H49, no SAN)"
  fi

  # Two URI SANs.
  if keep_leaf "$BAD/twosan-org.key" "$BAD/twosan-org.pem" noverify \
    "URI:spiffe://$TD/org/$H49" "URI:spiffe://$TD/org/$H50"; then
    note "kept    bad/twosan-org.pem"
  else
    issue "$OUT/ca.pem" "$OUT/ca.key" "$BAD/twosan-org.key" "$BAD/twosan-org.pem" \
      "$ORG_SUBJ" "clientAuth" "URI:spiffe://$TD/org/$H49" "URI:spiffe://$TD/org/$H50"
    note "issued  bad/twosan-org.pem (two URI SANs: org $H49 and org $H50)"
  fi
fi

# ---------------------------------------------------------------- summary
echo "Liên Thông dev PKI in $OUT (trust domain $TD, leaf validity $DAYS days):"
for line in "${SUMMARY[@]}"; do
  echo "  $line"
done
