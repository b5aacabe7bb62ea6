#!/usr/bin/env bash
# A local Liên Thông federation: a central broker and three provincial brokers
# (H49, H50, H51), each a separate lienthongd with its own configuration,
# certificate, data directory and logs, linked broker to broker:
#
#             central (G22)
#            /     |      \
#         h49 ---- h50     h51        (h49 <-> h50 is a direct link)
#
# Either on loopback (127.0.0.1, one port each) or, with --netns, each broker
# in its own network namespace behind a bridge, so links can be cut and healed.
# Run with --help for the commands.
set -euo pipefail

PROG=$(basename "$0")
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  cat <<EOF
Usage: $PROG [options] [command [args]]

Commands:
  start            (default) make the PKI and configurations if missing, start
                   every broker not already running, wait until each listens
                   (at most 20 s each), print brokers, endpoints, organizations
                   and example commands
  stop             stop every broker (SIGTERM, then SIGKILL after 10 s); with
                   namespaces, also remove them and the bridge
  status           brokers, pids, endpoints, organizations (and, with namespaces,
                   cut links); exit 0 if all four run, 3 otherwise
  kill NAME        kill -9 one broker (central, h49, h50, h51)
  restart NAME     start one broker again on the same configuration and data
                   (stopping it gracefully first if it runs)
  configs          only (re)write the PKI and the configurations; start nothing
  check            lienthongd --check-config on each configuration
  cut A B          (--netns) silently drop all traffic between brokers A and B
  heal A B         (--netns) undo 'cut A B'
  cut NAME         (--netns) isolate one broker completely (its link goes down)
  heal NAME        (--netns) bring its link up again

Options:
  --dir DIR        output directory (default: $ROOT/demo/federation)
  --base-port N    loopback: central N, h49 N+1, h50 N+2, h51 N+3;
                   namespaces: every broker on N (default: 7443)
  --bin DIR        build directory holding broker/server/lienthongd and
                   client-sdk/lienthong (default: $ROOT/build)
  --build          install dependencies and build into the --bin directory
                   first (deploy/setup-debian.sh, like deploy/demo.sh)
  --netns          run each broker in its own network namespace lt-NAME, joined
                   by veth pairs to the bridge lt-br0 (10.77.0.1/24); central
                   10.77.0.10, h49 .11, h50 .12, h51 .13. Needs root
  --loopback       the default mode: every broker on 127.0.0.1
  --no-peers       leave the federation: and peers: keys out of the
                   configurations (for a lienthongd without federation support);
                   --peers puts them back (the default)
  -h, --help       show this help

Layout of DIR:
  pki/                          dev PKI (deploy/pki/make-dev-pki.sh)
  NAME/config.yaml              the broker's configuration
  NAME/data/                    its RocksDB directory (documents encrypted at rest)
  NAME/master.key               its storage master key (mode 0600)
  NAME/broker.out, broker.log   its stdout ("listening on ...") and stderr (appended)
  NAME/pid                      its process id while it runs
  env.sh                        source it for 'lt WHO lienthong-args...'
  mode                          loopback or netns, base port, peers (of the last start)

--base-port, --netns/--loopback and --no-peers/--peers are remembered in
DIR/mode: later commands on DIR use them unless given again.
An existing configuration is kept unless it was generated with other settings
(mode, base port, --no-peers, DIR); 'configs' always rewrites them.
EOF
}

die() {
  echo "$PROG: error: $*" >&2
  exit 1
}
note() { echo "$PROG: $*" >&2; }

# ------------------------------------------------------------ the federation
NAMES=(central h49 h50 h51)
TRUST_DOMAIN=lienthong.local
BRIDGE=lt-br0
BRIDGE_ADDR=10.77.0.1
NET_PREFIX=10.77.0
PERSONS=(operator auditor approver)
READY_SECONDS=20
STOP_SECONDS=10

# index NAME: 0..3, or fails for an unknown broker.
index() {
  case $1 in
    central) echo 0 ;;
    h49) echo 1 ;;
    h50) echo 2 ;;
    h51) echo 3 ;;
    *) return 1 ;;
  esac
}

# orgs NAME: "code|name" lines, the organizations the broker serves.
orgs() {
  case $1 in
    central)
      echo "000.00.00.G22|Văn phòng Trung ương (demo)"
      echo "000.00.01.G22|Ban Tổ chức Trung ương (demo)"
      ;;
    h49 | h50 | h51)
      local p=${1^^}
      echo "000.00.00.$p|Ủy ban nhân dân tỉnh (demo $p)"
      echo "000.01.23.$p|Sở Nội vụ (demo $p)"
      ;;
  esac
}

# peers NAME: "peer default province" lines (the links and their routes).
peers() {
  case $1 in
    central) printf '%s\n' "h49 no H49" "h50 no H50" "h51 no H51" ;;
    h49) printf '%s\n' "central yes G22" "h50 no H50" ;;
    h50) printf '%s\n' "central yes G22" "h49 no H49" ;;
    h51) printf '%s\n' "central yes G22" ;;
  esac
}

all_orgs() {
  local n
  for n in "${NAMES[@]}"; do orgs "$n" | cut -d'|' -f1; done
}

ip_of() { echo "$NET_PREFIX.$((10 + $(index "$1")))"; }

endpoint() {
  if [[ $MODE == netns ]]; then
    echo "$(ip_of "$1"):$BASE_PORT"
  else
    echo "127.0.0.1:$((BASE_PORT + $(index "$1")))"
  fi
}

# ------------------------------------------------------------ arguments
DIR=$ROOT/demo/federation
BASE_PORT=7443
BIN=$ROOT/build
BUILD=0
MODE=
PEERS=
PORT_SET=0
ARGS=()

need_arg() {
  [[ $# -ge 2 && -n $2 ]] || die "option $1 needs a value (see --help)"
}

while [[ $# -gt 0 ]]; do
  case $1 in
    --dir) need_arg "$@"; DIR=$2; shift 2 ;;
    --dir=*) DIR=${1#*=}; shift ;;
    --base-port) need_arg "$@"; BASE_PORT=$2; PORT_SET=1; shift 2 ;;
    --base-port=*) BASE_PORT=${1#*=}; PORT_SET=1; shift ;;
    --bin) need_arg "$@"; BIN=$2; shift 2 ;;
    --bin=*) BIN=${1#*=}; shift ;;
    --build) BUILD=1; shift ;;
    --netns) MODE=netns; shift ;;
    --loopback) MODE=loopback; shift ;;
    --no-peers) PEERS=0; shift ;;
    --peers) PEERS=1; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
[[ ${#ARGS[@]} -gt 0 ]] || ARGS=(start)
CMD=${ARGS[0]}
ARGS=("${ARGS[@]:1}")

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
LIENTHONGD=$BIN/broker/server/lienthongd
CLI=$BIN/client-sdk/lienthong
POLICY=$ROOT/deploy/policy/lienthong-policy.yaml
PKI=$DIR/pki

# Settings not given take the values DIR was last set up with (DIR/mode), then
# the defaults. start and configs refuse other settings while brokers run.
saved_mode='' saved_port='' saved_peers=''
if [[ -s $DIR/mode ]]; then
  read -r saved_mode saved_port saved_peers <"$DIR/mode" || true
fi
[[ -n $MODE ]] || MODE=${saved_mode:-loopback}
[[ $PORT_SET -eq 1 ]] || BASE_PORT=${saved_port:-$BASE_PORT}
[[ -n $PEERS ]] || PEERS=${saved_peers:-1}
[[ $MODE == loopback || $MODE == netns ]] || die "bad mode '$MODE' in $DIR/mode"
[[ $PEERS == 0 || $PEERS == 1 ]] || die "bad peers setting '$PEERS' in $DIR/mode"
if ! [[ $BASE_PORT =~ ^[1-9][0-9]{0,4}$ ]] || ((BASE_PORT + 3 > 65535)); then
  die "--base-port must be a number from 1 to 65532, got '$BASE_PORT'"
fi
# config=N: bumped when the generated configuration changes shape.
SETTINGS="mode=$MODE base_port=$BASE_PORT peers=$PEERS dir=$DIR config=3"

# One command at a time per DIR (brokers do not inherit the lock: 9>&-).
command -v flock >/dev/null 2>&1 || die "flock (util-linux) not found"
exec 9>"$DIR/.lock"
flock -w 60 9 || die "another $PROG command holds $DIR/.lock"

# ------------------------------------------------------------ processes
# alive PID: the process exists and is not a zombie.
alive() {
  local state
  [[ -n $1 && -r /proc/$1/stat ]] || return 1
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $state && $state != Z && $state != X ]]
}

# broker_pid NAME: the pid of NAME's running lienthongd (from its pid file, and
# only if that process really is lienthongd on NAME's configuration).
broker_pid() {
  local f=$DIR/$1/pid pid
  [[ -s $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DIR/$1/config.yaml" || return 1
  echo "$pid"
}

# wait_gone PID SECONDS: true once PID is gone, false if still alive after SECONDS.
wait_gone() {
  local pid=$1 i
  for ((i = 0; i < $2 * 10; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  ! alive "$pid"
}

# stop_broker NAME [SIGNAL]: TERM (bounded, then KILL) or KILL one broker.
stop_broker() {
  local name=$1 sig=${2:-TERM} pid
  if pid=$(broker_pid "$name"); then
    if [[ $sig == KILL ]]; then
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone "$pid" 5 || note "$name (pid $pid) survived SIGKILL"
      echo "$name: killed (pid $pid)"
    else
      kill -TERM "$pid" 2>/dev/null || true
      if wait_gone "$pid" "$STOP_SECONDS"; then
        echo "$name: stopped (pid $pid)"
      else
        note "$name (pid $pid) still runs after ${STOP_SECONDS}s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 5 || note "$name (pid $pid) survived SIGKILL"
      fi
    fi
  fi
  rm -f "$DIR/$name/pid"
}

# launch NAME: start NAME's lienthongd in the background, detached in its own
# session (in its namespace with --netns); records its pid.
launch() {
  local name=$1 d=$DIR/$1 pid
  mkdir -p "$d/data"
  : >"$d/broker.out"
  echo "=== $(date '+%F %T') $PROG: starting $name ($(endpoint "$name"))" >>"$d/broker.log"
  # setsid execs in place (a background job is no process group leader), and
  # 'ip netns exec' execs in place too, so $! is lienthongd's own pid.
  if [[ $MODE == netns ]]; then
    ip netns exec "lt-$name" setsid "$LIENTHONGD" --config "$d/config.yaml" \
      </dev/null >"$d/broker.out" 2>>"$d/broker.log" 9>&- &
  else
    setsid "$LIENTHONGD" --config "$d/config.yaml" \
      </dev/null >"$d/broker.out" 2>>"$d/broker.log" 9>&- &
  fi
  pid=$!
  echo "$pid" >"$d/pid"
}

# wait_ready NAME: true once NAME printed "listening on"; false if it died or
# did not within READY_SECONDS (its log tail goes to stderr).
wait_ready() {
  local name=$1 d=$DIR/$1 pid i
  pid=$(<"$d/pid")
  for ((i = 0; i < READY_SECONDS * 10; i++)); do
    grep -q "listening on" "$d/broker.out" 2>/dev/null && return 0
    alive "$pid" || break
    sleep 0.1
  done
  grep -q "listening on" "$d/broker.out" 2>/dev/null && return 0
  if alive "$pid"; then
    note "$name did not listen within ${READY_SECONDS}s; last lines of $d/broker.log:"
  else
    note "$name exited; last lines of $d/broker.log:"
  fi
  # Only what this start logged (after the last "=== ... starting" line).
  awk '/^=== .* starting /{n=0} {line[n++]=$0} END{for(i=(n>30?n-30:0);i<n;i++) print line[i]}' \
    "$d/broker.log" >&2 || true
  return 1
}

# ------------------------------------------------------------ namespaces
need_root() {
  [[ $(id -u) -eq 0 ]] || die "--netns needs root (network namespaces, veth, bridge)"
  command -v ip >/dev/null 2>&1 || die "--netns needs 'ip' (iproute2)"
}

ns_exists() { ip netns list 2>/dev/null | cut -d' ' -f1 | grep -qx -- "$1"; }
link_exists() { ip link show dev "$1" >/dev/null 2>&1; }

NETNS_CREATED=0

# netns_up: the bridge, one namespace per broker with its veth pair and
# address (idempotent).
netns_up() {
  need_root
  local name ns
  if ! link_exists "$BRIDGE"; then
    ip link add "$BRIDGE" type bridge
    NETNS_CREATED=1
  fi
  ip addr replace "$BRIDGE_ADDR/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  for name in "${NAMES[@]}"; do
    ns=lt-$name
    if ! ns_exists "$ns"; then
      ip netns add "$ns"
      NETNS_CREATED=1
    fi
    ip -n "$ns" link set lo up
    if ! link_exists "$ns"; then
      # Host side lt-NAME on the bridge, the namespace side is its eth0.
      ip -n "$ns" link del eth0 2>/dev/null || true
      ip link add "$ns" type veth peer name eth0 netns "$ns"
      NETNS_CREATED=1
    fi
    ip link set "$ns" master "$BRIDGE"
    ip link set "$ns" up
    ip -n "$ns" addr replace "$(ip_of "$name")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route replace default via "$BRIDGE_ADDR" dev eth0
  done
}

# netns_down: remove the namespaces, veth pairs and bridge (idempotent).
netns_down() {
  local name ns
  for name in "${NAMES[@]}"; do
    ns=lt-$name
    if link_exists "$ns"; then ip link del "$ns" 2>/dev/null || true; fi
    if ns_exists "$ns"; then ip netns del "$ns" 2>/dev/null || note "could not remove namespace $ns"; fi
  done
  if link_exists "$BRIDGE"; then ip link del "$BRIDGE" 2>/dev/null || note "could not remove $BRIDGE"; fi
}

# netns_any: any of our namespaces or the bridge exists.
netns_any() {
  local name
  link_exists "$BRIDGE" && return 0
  for name in "${NAMES[@]}"; do ns_exists "lt-$name" && return 0; done
  return 1
}

# Cutting A-B routes B's address, inside A's namespace, into a sink: the
# NOARP end of a veth pair whose other end stays down, so every packet is
# silently dropped (new connections time out, open ones stall) -- like a real
# partition, unlike a blackhole route, which fails connect() at once with
# EINVAL. (This kernel has no dummy device, tc drop action or iptables.)
SINK=lt-sink

sink_up() {
  if ! ip -n "lt-$1" link show dev "$SINK" >/dev/null 2>&1; then
    ip -n "lt-$1" link add "$SINK" type veth peer name "$SINK-p"
  fi
  ip -n "lt-$1" link set "$SINK" arp off up
}

# sunk NAME: the brokers NAME's namespace drops traffic to.
sunk() {
  local other
  for other in "${NAMES[@]}"; do
    [[ $other != "$1" ]] || continue
    ip -n "lt-$1" route show dev "$SINK" 2>/dev/null | grep -qE "^$(ip_of "$other")( |$)" &&
      echo "$other"
  done
  return 0
}

# ------------------------------------------------------------ files
yq() { local s=${1//\'/\'\'}; printf "'%s'" "$s"; }

# metrics_address NAME: where the broker serves /metrics: on loopback the
# base port + 2021 + its index (7443 -> 9464..9467); in its namespace, 9464.
metrics_address() {
  local i=0 b
  if [[ $MODE == netns ]]; then echo "$(ip_of "$1"):9464"; return; fi
  for b in "${NAMES[@]}"; do
    [[ $b == "$1" ]] && break
    i=$((i + 1))
  done
  echo "127.0.0.1:$((BASE_PORT + 2021 + i))"
}

# write_config NAME: the broker's configuration on stdout.
write_config() {
  local name=$1 b=$DIR/$1 code oname peer def prov listen
  if [[ $MODE == netns ]]; then listen="$(ip_of "$name"):$BASE_PORT"; else listen=$(endpoint "$name"); fi
  cat <<EOF
# Generated by deploy/federation.sh; kept as long as these settings hold:
# federation.sh settings: $SETTINGS
broker:
  name: $name
  trust_domain: $TRUST_DOMAIN
listen: $listen
data_dir: $(yq "$b/data")
tls:
  certificate: $(yq "$PKI/brokers/$name.pem")
  private_key: $(yq "$PKI/brokers/$name.key")
  ca: $(yq "$PKI/ca.pem")
orgs:
EOF
  while IFS='|' read -r code oname; do
    echo "  - code: $code"
    echo "    name: $(yq "$oname")"
  done < <(orgs "$name")
  cat <<EOF
limits:
  max_document_bytes: 16777216
storage:                        # documents encrypted at rest; the key stays outside data/
  master_key_file: $(yq "$b/master.key")
policy:
  file: $(yq "$POLICY")
roles:
  operator: [operator]
  auditor: [auditor]
approvals:                      # who approves held automated decisions, per org
  expire_seconds: 259200
  approvers:
    - person: approver
      orgs: [$(orgs "$name" | cut -d'|' -f1 | paste -sd, - | sed 's/,/, /g')]
metrics:                        # Prometheus text at http://HOST:PORT/metrics
  listen: $(metrics_address "$name")
EOF
  [[ $PEERS -eq 1 ]] || return 0
  cat <<EOF
federation:
  max_hops: 8
  announce_seconds: 30
  window: 4096
peers:
EOF
  while read -r peer def prov; do
    echo "  - name: $peer"
    echo "    endpoint: $(endpoint "$peer")"
    [[ $def == yes ]] && echo "    default: true"
    echo "    serves:"
    echo "      provinces: [$prov]"
  done < <(peers "$name")
}

# install_file TMP DEST: move TMP over DEST unless they are equal.
install_file() {
  if [[ -f $2 ]] && cmp -s "$1" "$2"; then
    rm -f "$1"
  else
    mv -f "$1" "$2"
  fi
}

make_pki() {
  local args=(--out "$PKI" --trust-domain "$TRUST_DOMAIN") name code p
  for name in "${NAMES[@]}"; do
    # Loopback SANs come by default; the namespace address is always added,
    # so switching modes never re-issues.
    args+=(--broker "$name:$(ip_of "$name")")
  done
  for code in $(all_orgs); do args+=(--org "$code"); done
  for p in "${PERSONS[@]}"; do args+=(--person "$p"); done
  local log
  log=$(mktemp "${TMPDIR:-/tmp}/lt-federation-pki.XXXXXX")
  if ! "$ROOT/deploy/pki/make-dev-pki.sh" "${args[@]}" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    die "making the PKI failed"
  fi
  rm -f "$log"
}

# make_configs [force]: PKI, configurations, env.sh.
make_configs() {
  local force=${1:-} name cfg tmp
  make_pki
  for name in "${NAMES[@]}"; do
    mkdir -p "$DIR/$name/data"
    if [[ ! -s $DIR/$name/master.key ]]; then
      (umask 077 && openssl rand -hex 32 >"$DIR/$name/master.key")
    fi
    cfg=$DIR/$name/config.yaml
    if [[ -z $force && -f $cfg ]]; then
      if grep -qxF "# federation.sh settings: $SETTINGS" "$cfg"; then
        continue
      elif ! grep -q '^# federation.sh settings: ' "$cfg"; then
        note "keeping $cfg (not generated by $PROG)"
        continue
      fi
      note "settings changed: rewriting $cfg"
    fi
    tmp=$(mktemp "$cfg.XXXXXX")
    write_config "$name" >"$tmp"
    install_file "$tmp" "$cfg"
  done
  write_env
  echo "$MODE $BASE_PORT $PEERS" >"$DIR/mode"
}

# env.sh: 'lt WHO lienthong-args...' where WHO is an organization code (talks
# to its home broker) or PERSON@BROKER (admin calls).
write_env() {
  local tmp name code
  tmp=$(mktemp "$DIR/env.sh.XXXXXX")
  {
    echo "# Generated by deploy/federation.sh. Source it, then:"
    echo "#   lt 000.00.00.H49 send --to 000.00.00.H50 --subject 'Thử' FILE"
    echo "#   lt operator@central policy get"
    echo "LT_CLI=$(printf '%q' "$CLI")"
    echo "LT_PKI=$(printf '%q' "$PKI")"
    echo "lt() {"
    echo "  local who=\${1:?usage: lt ORG|PERSON@BROKER lienthong-args...} ep cert enc=() extra=()"
    echo "  shift"
    echo "  case \$who in"
    for name in "${NAMES[@]}"; do
      while IFS='|' read -r code _; do
        echo "    $code) ep=$(endpoint "$name") cert=orgs/$code enc=(orgs/$code.enc) ;;"
      done < <(orgs "$name")
    done
    for name in "${NAMES[@]}"; do
      echo "    *@$name) ep=$(endpoint "$name") cert=persons/\${who%@*} ;;"
    done
    echo "    *) echo \"lt: unknown organization or PERSON@BROKER: \$who\" >&2; return 2 ;;"
    echo "  esac"
    echo "  # An organization's encryption key pair opens what is sealed for it."
    echo "  if [ \${#enc[@]} -gt 0 ] && [ -f \"\$LT_PKI/\${enc[0]}.pem\" ]; then"
    echo "    extra=(--enc-cert \"\$LT_PKI/\${enc[0]}.pem\" --enc-key \"\$LT_PKI/\${enc[0]}.key\")"
    echo "  fi"
    echo "  \"\$LT_CLI\" --endpoint \"\$ep\" --ca \"\$LT_PKI/ca.pem\" --cert \"\$LT_PKI/\$cert.pem\" --key \"\$LT_PKI/\$cert.key\" \"\${extra[@]}\" \"\$@\""
    echo "}"
  } >"$tmp"
  install_file "$tmp" "$DIR/env.sh"
}

# ------------------------------------------------------------ commands
need_binary() {
  [[ -x $LIENTHONGD ]] ||
    die "$LIENTHONGD not found: build first (deploy/setup-debian.sh --build), or pass --build or --bin DIR"
}

need_name() {
  if [[ ${#ARGS[@]} -ne 1 ]] || ! index "${ARGS[0]}" >/dev/null; then
    die "$CMD needs one broker name: ${NAMES[*]}"
  fi
}

running_any() {
  local name
  for name in "${NAMES[@]}"; do broker_pid "$name" >/dev/null && return 0; done
  return 1
}

check_mode_change() {
  if [[ -s $DIR/mode ]] && running_any; then
    local m p q
    read -r m p q <"$DIR/mode" || true
    [[ "$m $p $q" == "$MODE $BASE_PORT $PEERS" ]] ||
      die "brokers in $DIR run with other settings ($m, base port $p, peers $q); '$PROG --dir $DIR stop' first"
  fi
}

STARTED=()
START_OK=0
# On a failed start: stop the brokers this run started and remove the
# namespaces it created (unless other brokers still run in them).
start_cleanup() {
  local rc=$? name
  if [[ $START_OK -eq 0 ]] && [[ ${#STARTED[@]} -gt 0 || $NETNS_CREATED -eq 1 ]]; then
    note "start failed; undoing what this run started"
    for name in "${STARTED[@]}"; do stop_broker "$name" >/dev/null 2>&1 || true; done
    if [[ $NETNS_CREATED -eq 1 ]] && ! running_any; then netns_down; fi
  fi
  exit "$rc"
}

# cmd_start [NAME]: all brokers (making PKI and configurations if needed), or
# only NAME on its existing configuration.
cmd_start() {
  local names=("$@") name
  [[ ${#names[@]} -gt 0 ]] || names=("${NAMES[@]}")
  if [[ $BUILD -eq 1 ]]; then
    "$ROOT/deploy/setup-debian.sh"
    "$ROOT/deploy/setup-debian.sh" --build "$BIN" >/dev/null
  fi
  need_binary
  check_mode_change
  trap start_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  [[ $# -gt 0 ]] || make_configs
  if [[ $MODE == netns ]]; then netns_up; fi
  for name in "${names[@]}"; do
    if broker_pid "$name" >/dev/null; then
      echo "$name: already running (pid $(broker_pid "$name"))"
      continue
    fi
    launch "$name"
    STARTED+=("$name")
  done
  for name in "${STARTED[@]}"; do
    wait_ready "$name" || die "$name did not start (config $DIR/$name/config.yaml)"
    echo "$name: $(head -n 1 "$DIR/$name/broker.out") (pid $(<"$DIR/$name/pid"))"
  done
  START_OK=1
  trap - EXIT INT TERM
}

print_table() {
  local name state pid cut
  printf '%-8s %-8s %-8s %-21s %s\n' BROKER STATE PID ENDPOINT ORGANIZATIONS
  for name in "${NAMES[@]}"; do
    if pid=$(broker_pid "$name"); then state=running; else state=stopped pid=-; fi
    printf '%-8s %-8s %-8s %-21s %s\n' "$name" "$state" "$pid" "$(endpoint "$name")" \
      "$(orgs "$name" | cut -d'|' -f1 | paste -sd' ')"
  done
  if [[ $MODE == netns ]]; then
    for name in "${NAMES[@]}"; do
      ns_exists "lt-$name" || continue
      if [[ $(cat "/sys/class/net/lt-$name/operstate" 2>/dev/null || echo down) != up ]]; then
        echo "  $name is isolated (link lt-$name down)"
      fi
      cut=$(sunk "$name" | paste -sd' ')
      [[ -z $cut ]] || echo "  $name drops traffic to: $cut"
    done
  fi
}

print_examples() {
  local self=$ROOT/deploy/federation.sh
  [[ $DIR == "$ROOT/demo/federation" ]] || self="$self --dir $DIR"
  [[ $BIN == "$ROOT/build" ]] || self="$self --bin $BIN"
  cat <<EOF

Links: h49-central, h50-central, h51-central, h49-h50 (direct). Data, logs and
configurations: $DIR/<broker>/. Examples (bash):
  source $DIR/env.sh
  echo 'Báo cáo' >$DIR/report.txt
  lt 000.00.00.H49 send --to 000.00.00.G22 --subject 'Báo cáo quý IV' $DIR/report.txt   # h49 -> central
  lt 000.00.00.G22 receive --max 10 --wait 10 --out $DIR/inbox-G22
  lt 000.00.00.H51 send --to 000.00.00.H49 --subject 'Phối hợp' $DIR/report.txt         # h51 -> central -> h49
  lt 000.00.00.H49 send --to 000.00.00.H50 --subject 'Phối hợp' $DIR/report.txt         # h49 -> h50 (direct)
  lt 000.01.23.H51 send --to 000.00.00.H50 --subject 'Bị từ chối' $DIR/report.txt       # denied by the policy
  lt 000.00.00.H49 track <ID>
  lt operator@h49 policy get
  $self kill h50
  $self restart h50
  $self status
  $self stop
EOF
  if [[ $MODE == netns ]]; then
    echo "  $self cut h49 h50      # heal h49 h50"
    echo "  $self cut central      # heal central"
  fi
}

cmd_stop() {
  local name
  for name in "${NAMES[@]}"; do stop_broker "$name"; done
  if [[ $MODE == netns ]] && netns_any; then
    need_root
    netns_down
    echo "namespaces and $BRIDGE removed"
  fi
}

cmd_cut_heal() {
  [[ $MODE == netns ]] || die "$CMD needs a federation started with --netns"
  need_root
  local a b
  [[ ${#ARGS[@]} -ge 1 && ${#ARGS[@]} -le 2 ]] || die "usage: $PROG $CMD A B | $PROG $CMD NAME"
  for a in "${ARGS[@]}"; do index "$a" >/dev/null || die "unknown broker '$a' (brokers: ${NAMES[*]})"; done
  for a in "${ARGS[@]}"; do ns_exists "lt-$a" || die "namespace lt-$a does not exist; start the federation first"; done
  a=${ARGS[0]}
  if [[ ${#ARGS[@]} -eq 1 ]]; then
    if [[ $CMD == cut ]]; then
      ip link set "lt-$a" down
      echo "$a isolated (lt-$a down)"
    else
      ip link set "lt-$a" up
      echo "$a reconnected (lt-$a up)"
    fi
    return
  fi
  b=${ARGS[1]}
  [[ $a != "$b" ]] || die "$CMD needs two different brokers"
  if [[ $CMD == cut ]]; then
    sink_up "$a"
    sink_up "$b"
    ip -n "lt-$a" route replace "$(ip_of "$b")/32" dev "$SINK"
    ip -n "lt-$b" route replace "$(ip_of "$a")/32" dev "$SINK"
    echo "link $a <-> $b cut (each drops packets to the other)"
  else
    ip -n "lt-$a" route del "$(ip_of "$b")/32" dev "$SINK" 2>/dev/null || true
    ip -n "lt-$b" route del "$(ip_of "$a")/32" dev "$SINK" 2>/dev/null || true
    echo "link $a <-> $b healed"
  fi
}

case $CMD in
  start)
    [[ ${#ARGS[@]} -eq 0 ]] || die "start takes no arguments (restart NAME starts one broker)"
    cmd_start
    echo
    print_table
    print_examples
    ;;
  configs)
    [[ ${#ARGS[@]} -eq 0 ]] || die "configs takes no arguments"
    check_mode_change
    make_configs force
    for name in "${NAMES[@]}"; do echo "$DIR/$name/config.yaml"; done
    echo "$DIR/env.sh"
    ;;
  check)
    need_binary
    for name in "${NAMES[@]}"; do
      [[ -f $DIR/$name/config.yaml ]] || die "no $DIR/$name/config.yaml; run '$PROG configs' first"
      echo "== $name"
      "$LIENTHONGD" --check-config "$DIR/$name/config.yaml"
    done
    ;;
  stop)
    [[ ${#ARGS[@]} -eq 0 ]] || die "stop takes no arguments (kill NAME stops one broker)"
    cmd_stop
    ;;
  status)
    print_table
    for name in "${NAMES[@]}"; do broker_pid "$name" >/dev/null || exit 3; done
    ;;
  kill)
    need_name
    broker_pid "${ARGS[0]}" >/dev/null || echo "${ARGS[0]}: not running"
    stop_broker "${ARGS[0]}" KILL
    ;;
  restart)
    need_name
    [[ -f $DIR/${ARGS[0]}/config.yaml ]] || die "no $DIR/${ARGS[0]}/config.yaml; run '$PROG start' first"
    need_binary
    stop_broker "${ARGS[0]}"
    cmd_start "${ARGS[0]}"
    ;;
  cut | heal) cmd_cut_heal ;;
  *) die "unknown command: $CMD (see --help)" ;;
esac
