#!/usr/bin/env bash
# Side-by-side benchmark: hearth against Prosody and ejabberd (Debian 12 packages, XMPP),
# Synapse (Matrix) and CryptPad, on loopback, with the load generators in bench/xmppload,
# bench/matrixload and bench/cpload (C++, built here into build-bench/ even with --no-build).
# See bench/README.md.
#
#   bench/run.sh [--quick] [--runs N] [--servers hearth,prosody,ejabberd,synapse,cryptpad]
#                [--workloads login,login256,messages,paced,muc,idle,matrix,cryptpad,bigroom]
#                [--conns 1000,5000,15000]
#                [--peer-archive|--no-peer-archive] [--no-install] [--no-build] [--keep] [--out FILE]
#
# Every server is started fresh for every run of every workload, and runs alternate
# (hearth, prosody, ejabberd, hearth, ...). Results: bench/results/<date>.md (also printed).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH="$ROOT/bench"
BUILD="$ROOT/build-bench"

RUNS=3
SERVERS="hearth,prosody,ejabberd,synapse,cryptpad"
WORKLOADS="login,login256,messages,paced,muc,idle,matrix,cryptpad"
CONNS="1000,5000"
INSTALL=1
BUILD_HEARTH=1
KEEP=0
PEER_ARCHIVE=1   # hearth always archives (XEP-0313); the peers archive too unless told not to
QUICK=0
OUT=""
LOGINS=2000
CLIENTS=200
MESSAGES=20000
PACED_RATE=1000
PACED_MESSAGES=5000
USERS=1000
SESSIONS_PER_USER=10   # idle: connections per account (ejabberd allows 10 sessions per account)
IDLE_SERVERS="hearth,prosody,ejabberd"
MUC_CLIENTS=500
MUC_SENDERS=10
MUC_MESSAGES=200
MATRIX_LEVELS=1,16,64
MATRIX_MESSAGES=2000
BIGROOM_MEMBERS=10000   # bigroom (hearth only, not in the default list): bench/bigroom/bigroom.sh
BIGROOM_EVENTS=100000
CP_CHANNELS=20
CP_CLIENTS=10
CP_MESSAGES=20
# Peers outside Debian 12: Synapse in a Debian sid chroot, CryptPad from a snapshot tree
# (../shared/bench/README.md). Skipped, and said so, when absent.
SYNAPSE_ROOT=${SYNAPSE_ROOT:-/srv/sidroot}
CRYPTPAD_DIR=${CRYPTPAD_DIR:-/srv/cryptpad}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1; RUNS=1; CONNS="500,1000"; LOGINS=300; MESSAGES=4000; PACED_MESSAGES=1000; USERS=250
             MUC_CLIENTS=100; MUC_MESSAGES=50; MATRIX_MESSAGES=128; BIGROOM_MEMBERS=1000; BIGROOM_EVENTS=10000; CP_CHANNELS=5; CP_CLIENTS=5; CP_MESSAGES=10 ;;
    --runs) RUNS="$2"; shift ;;
    --users) USERS="$2"; shift ;;
    --sessions-per-user) SESSIONS_PER_USER="$2"; shift ;;
    --idle-servers) IDLE_SERVERS="$2"; shift ;;
    --servers) SERVERS="$2"; shift ;;
    --workloads) WORKLOADS="$2"; shift ;;
    --conns) CONNS="$2"; shift ;;
    --no-install) INSTALL=0 ;;
    --no-build) BUILD_HEARTH=0 ;;
    --peer-archive) PEER_ARCHIVE=1 ;;
    --no-peer-archive) PEER_ARCHIVE=0 ;;
    --keep) KEEP=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

# Accounts: each idle connection target needs at most 10 sessions per account (ejabberd's
# default max_user_sessions is 10; hearth and Prosody have no such limit); the message
# workload needs CLIENTS accounts, the muc workload MUC_CLIENTS.
max_conns=$(tr ',' '\n' <<<"$CONNS" | sort -n | tail -1)
need=$(( (max_conns + SESSIONS_PER_USER - 1) / SESSIONS_PER_USER ))
(( need > USERS )) && USERS=$need
(( CLIENTS > USERS )) && USERS=$CLIENTS
(( MUC_CLIENTS > USERS )) && USERS=$MUC_CLIENTS

DOMAIN=bench.local
PASSWORD=benchpass
HEARTH_PORT=35222
HEARTH_HTTP_PORT=38008
CRYPTPAD_WS_PORT=3003
PROSODY_PORT=15222
EJABBERD_PORT=25222

trap 'echo "bench/run.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
has() { [[ ",$1," == *",$2,"* ]]; }

sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"

# ------------------------------------------------------------------ install and build
if (( INSTALL )); then
  log "installing build dependencies"
  "$ROOT/scripts/install-deps.sh"
  peers_missing=()
  for p in prosody lua-unbound ejabberd; do
    [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" == "install ok installed" ]] || peers_missing+=("$p")
  done
  if (( ${#peers_missing[@]} )); then
    log "installing ${peers_missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q --no-install-recommends "${peers_missing[@]}" >/dev/null \
      || log "could not install ${peers_missing[*]} (the missing peers will be skipped)"
  fi
fi
# The Debian packages may start their stock services (listening on *:5222): stop them.
for svc in prosody ejabberd; do
  if pgrep -u "$svc" -f 'lua|beam' >/dev/null 2>&1 && command -v service >/dev/null; then
    log "stopping the system $svc service"
    $sudo service "$svc" stop >/dev/null 2>&1 || true
  fi
done

log "building hearthd (Release), xmppload, matrixload and cpload"
mkdir -p "$BUILD"
build() {
  if (( BUILD_HEARTH )); then
    cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHEARTH_TESTS=OFF &&
      ninja -C "$BUILD" -j1 hearthd hearthctl || return 1
  fi
  cmake -S "$BENCH/xmppload" -B "$BUILD/xmppload" -G Ninja -DCMAKE_BUILD_TYPE=Release &&
    ninja -C "$BUILD/xmppload" -j1 &&
    cmake -S "$BENCH/matrixload" -B "$BUILD/matrixload" -G Ninja -DCMAKE_BUILD_TYPE=Release &&
    ninja -C "$BUILD/matrixload" -j1 &&
    cmake -S "$BENCH/cpload" -B "$BUILD/cpload" -G Ninja -DCMAKE_BUILD_TYPE=Release &&
    ninja -C "$BUILD/cpload" -j1
}
for attempt in 1 2 3 4 5; do
  build >"$BUILD/bench-build.log" 2>&1 && break
  grep -m3 -E 'error|FAILED' "$BUILD/bench-build.log" >&2 || tail -5 "$BUILD/bench-build.log" >&2
  (( attempt == 5 )) && { log "build failed (full log: $BUILD/bench-build.log)"; exit 1; }
  log "build failed (a source file mid-edit?); retrying in 60 s"
  sleep 60
done
HEARTHD=${HEARTHD:-"$BUILD/apps/hearthd/hearthd"}   # override: compare another build (with --no-build)
HEARTHCTL=${HEARTHCTL:-"$BUILD/apps/hearthctl/hearthctl"}   # likewise
LOAD="$BUILD/xmppload/xmppload"
MLOAD="$BUILD/matrixload/matrixload"
CPLOAD="$BUILD/cpload/cpload"

# ------------------------------------------------------------------ work directory
WORK=$(mktemp -d /tmp/hearth-bench.XXXXXX)
chmod 755 "$WORK"   # the peers run as their own users
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
EPMD_BEFORE=" $(pgrep -u ejabberd -x epmd 2>/dev/null | tr '\n' ' ' || true) "
cleanup() {
  stop_current || true
  # ejabberdctl may start an epmd daemon; end the ones this run started (by pid).
  local p
  for p in $(pgrep -u ejabberd -x epmd 2>/dev/null); do
    [[ "$EPMD_BEFORE" == *" $p "* ]] || kill "$p" 2>/dev/null || true
  done
  if (( KEEP )); then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp -r "$BENCH/peers/xmpp/." "$WORK/"
grep -rl @BENCH_DIR@ "$WORK" | xargs sed -i "s#@BENCH_DIR@#$WORK#g"
mkdir -p "$WORK/prosody/certs" "$WORK/prosody/data" "$WORK/ejabberd/spool" "$WORK/ejabberd/logs" "$WORK/hearth/data"

# One P-256 certificate (the kind hearth generates) for every server.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=$DOMAIN" \
  -addext "subjectAltName=DNS:$DOMAIN" -keyout "$WORK/bench.key" -out "$WORK/bench.crt" 2>/dev/null
cp "$WORK/bench.key" "$WORK/prosody/certs/$DOMAIN.key"
cp "$WORK/bench.crt" "$WORK/prosody/certs/$DOMAIN.crt"
cat "$WORK/bench.crt" "$WORK/bench.key" >"$WORK/ejabberd/conf/bench.pem"
# The same module set plus the message archive (modules: is the file's last section).
cp "$WORK/ejabberd/conf/ejabberd.yml" "$WORK/ejabberd/conf/ejabberd-mam.yml"
printf '  mod_mam:\n    default: always\n' >>"$WORK/ejabberd/conf/ejabberd-mam.yml"
PROSODY_MAM=""
EJ_CONF="$WORK/ejabberd/conf/ejabberd.yml"
if (( PEER_ARCHIVE )); then PROSODY_MAM=1; EJ_CONF="$WORK/ejabberd/conf/ejabberd-mam.yml"; fi

HEARTH_CFG="$WORK/hearth/hearth.toml"
cat >"$HEARTH_CFG" <<EOF
# Generated by bench/run.sh: loopback only, throttles relaxed so the benchmark measures the
# server and not its limits (the peers' throttles are disabled the same way).
[server]
data_dir = "$WORK/hearth/data"

[[domain]]
name = "$DOMAIN"
registration = "invite"   # Matrix users register with hearthctl invitations
tls_cert = "$WORK/bench.crt"
tls_key = "$WORK/bench.key"

[http]
bind = ["127.0.0.1"]
port = $HEARTH_HTTP_PORT
https_port = -1

[xmpp]
bind = ["127.0.0.1"]
c2s_port = $HEARTH_PORT
c2s_tls_port = -1
s2s_port = -1  # no federation in these workloads; 5269 may be another hearthd's on this machine
read_bytes_per_second = 1073741824

[limits]
max_connections = 19000
max_connections_per_ip = 19000
requests_per_second_per_ip = 1000000
request_burst_per_ip = 1000000
max_inflight_requests = 1000000

[accounts]
scram_iterations = 4096

[log]
level = "warn"
EOF

# ------------------------------------------------------------------ server control
CURRENT=""      # server now running
SERVER_PID=0

wait_port() {  # port, seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    ss -ltn "sport = :$1" | grep -q LISTEN && return 0
    sleep 0.1
  done
  return 1
}

start_hearth() {
  setsid "$HEARTHD" --config "$HEARTH_CFG" >>"$WORK/hearth/hearthd.log" 2>&1 </dev/null &
  SERVER_PID=$!
  wait_port $HEARTH_PORT 30
}
stop_hearth() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$SERVER_PID" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
}

start_prosody() {
  chown -R prosody:prosody "$WORK/prosody"
  PROSODY_BENCH_TLS=1 PROSODY_BENCH_MAM="$PROSODY_MAM" "$WORK/prosody/run_prosody.sh" start >/dev/null || return 1
  SERVER_PID=$(cat "$WORK/prosody/data/prosody.pid")
}
stop_prosody() {
  local pid=$SERVER_PID
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

start_ejabberd() {
  chown -R ejabberd:ejabberd "$WORK/ejabberd"
  EJ_CONFIG="$EJ_CONF" "$WORK/ejabberd/run_ejabberd.sh" start >/dev/null || return 1
  wait_port $EJABBERD_PORT 30 || return 1
  SERVER_PID=$(pgrep -n -u ejabberd beam.smp)
}
stop_ejabberd() {
  local pid=$SERVER_PID
  EJ_CONFIG="$EJ_CONF" "$WORK/ejabberd/run_ejabberd.sh" ctl stop >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

# Synapse in the sid chroot of ../shared/bench/README.md (SQLite, registration without
# verification, rc_* relaxed), listening on 127.0.0.1:8008.
SYNAPSE_PORT=8008
start_synapse() {
  local d="$SYNAPSE_ROOT/tmp/hearth-bench-synapse"
  $sudo mkdir -p "$d"
  [[ -f "$d/homeserver.yaml" ]] || $sudo tee "$d/homeserver.yaml" >/dev/null <<EOF2
server_name: localhost
pid_file: /tmp/hearth-bench-synapse/homeserver.pid
listeners:
  - port: $SYNAPSE_PORT
    bind_addresses: ['127.0.0.1']
    type: http
    x_forwarded: false
    resources: [{names: [client, federation], compress: false}]
database: {name: sqlite3, args: {database: /tmp/hearth-bench-synapse/homeserver.db}}
log_config: /tmp/hearth-bench-synapse/log.yaml
media_store_path: /tmp/hearth-bench-synapse/media
signing_key_path: /tmp/hearth-bench-synapse/signing.key
report_stats: false
enable_registration: true
enable_registration_without_verification: true
trusted_key_servers: []
rc_message: {per_second: 100000, burst_count: 100000}
rc_registration: {per_second: 100000, burst_count: 100000}
rc_login: {address: {per_second: 100000, burst_count: 100000}, account: {per_second: 100000, burst_count: 100000}}
rc_joins: {local: {per_second: 100000, burst_count: 100000}, remote: {per_second: 100000, burst_count: 100000}}
rc_joins_per_room: {per_second: 100000, burst_count: 100000}
EOF2
  printf 'version: 1\nroot: {level: WARNING, handlers: []}\n' | $sudo tee "$d/log.yaml" >/dev/null
  $sudo rm -f "$d/homeserver.db"
  $sudo chroot "$SYNAPSE_ROOT" python3 -m synapse.app.homeserver -c /tmp/hearth-bench-synapse/homeserver.yaml --generate-keys >/dev/null 2>&1 || true
  setsid $sudo chroot "$SYNAPSE_ROOT" python3 -m synapse.app.homeserver -c /tmp/hearth-bench-synapse/homeserver.yaml \
    >>"$WORK/synapse.log" 2>&1 </dev/null &
  wait_port $SYNAPSE_PORT 60 || return 1
  SERVER_PID=$(pgrep -n -f 'synapse.app.homeserver -c /tmp/hearth-bench-synapse')
}
stop_synapse() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$SERVER_PID" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
}
# CryptPad from the snapshot tree (npm install done, config/config.js present): node server.js.
start_cryptpad() {
  (cd "$CRYPTPAD_DIR" && exec setsid node server.js >>"$WORK/cryptpad.log" 2>&1 </dev/null) &
  SERVER_PID=$!
  wait_port $CRYPTPAD_WS_PORT 60
}
stop_cryptpad() {
  pkill -TERM -P "$SERVER_PID" 2>/dev/null || true
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
}

data_of() { case "$1" in hearth) echo "$WORK/hearth/data" ;; prosody) echo "$WORK/prosody/data" ;; ejabberd) echo "$WORK/ejabberd/spool" ;; esac; }
port_of() { case "$1" in hearth) echo $HEARTH_PORT ;; prosody) echo $PROSODY_PORT ;; ejabberd) echo $EJABBERD_PORT ;; esac; }

restore_data() {  # server
  local d
  d=$(data_of "$1")
  [[ -d "$d.pristine" ]] || return 0
  rm -rf "$d"
  cp -a "$d.pristine" "$d"
}
start_server() {
  CURRENT=""
  "start_$1" || { log "$1 did not start"; return 1; }
  CURRENT=$1
  sleep 2   # let start-up work finish before the idle readings
}
stop_current() {
  [[ -n "$CURRENT" ]] || return 0
  "stop_$CURRENT"
  CURRENT=""
  sleep 1
}

# ------------------------------------------------------------------ peers available?
AVAILABLE=()
SKIPPED=()
for s in ${SERVERS//,/ }; do
  case "$s" in
    hearth) [[ -x "$HEARTHD" ]] && AVAILABLE+=(hearth) || SKIPPED+=("hearth: not built") ;;
    prosody) command -v prosody >/dev/null && id prosody >/dev/null 2>&1 && AVAILABLE+=(prosody) \
               || SKIPPED+=("prosody: not installed (apt-get install prosody lua-unbound)") ;;
    ejabberd) command -v ejabberdctl >/dev/null && id ejabberd >/dev/null 2>&1 && AVAILABLE+=(ejabberd) \
               || SKIPPED+=("ejabberd: not installed (apt-get install ejabberd)") ;;
    synapse) if ! has "$WORKLOADS" matrix; then :
             elif [[ -d "$SYNAPSE_ROOT/usr/lib/python3/dist-packages/synapse" ]]; then AVAILABLE+=(synapse)
             else SKIPPED+=("synapse: not installed — Debian 12 has no matrix-synapse package and the sid chroot of ../shared/bench/README.md ($SYNAPSE_ROOT) does not exist on this machine; the Matrix tables show hearth alone, with Synapse's published figures as anchors")
             fi ;;
    cryptpad) if ! has "$WORKLOADS" cryptpad; then :
              elif [[ -f "$CRYPTPAD_DIR/server.js" && -d "$CRYPTPAD_DIR/node_modules" ]]; then AVAILABLE+=(cryptpad)
              else SKIPPED+=("cryptpad: no CryptPad tree at $CRYPTPAD_DIR (set CRYPTPAD_DIR; built per ../shared/bench/README.md from GitHub snapshots); the CryptPad table shows hearth alone, with CryptPad's published figures as anchors")
              fi ;;
    *) SKIPPED+=("$s: unknown server") ;;
  esac
done
for m in "${SKIPPED[@]}"; do log "skipping $m"; done

# ------------------------------------------------------------------ accounts
create_users() {  # server
  local s=$1 t0=$SECONDS
  log "$s: creating u1..u$USERS"
  start_server "$s" || return 1
  case "$s" in
    hearth)
      seq 1 "$USERS" | xargs -P 4 -I{} sh -c "echo '$PASSWORD' | '$HEARTHCTL' --config '$HEARTH_CFG' user add u{}@$DOMAIN >/dev/null 2>&1 || echo fail" \
        | grep -c fail >"$WORK/hearth-user-failures" || true
      ;;
    prosody)
      "$WORK/prosody/create_users.sh" "$USERS" >/dev/null
      ;;
    ejabberd)
      "$LOAD" --workload register --port $EJABBERD_PORT --domain $DOMAIN --password $PASSWORD \
        --total "$USERS" --users "$USERS" --concurrency 20 --max-seconds 600 >"$WORK/ejabberd-register.json" || true
      ;;
  esac
  # Log every account in once: checks them all and fills the generator's SCRAM key cache
  # (one PBKDF2 per account and mechanism, as a real client caches it).
  if ! "$LOAD" --workload login --port "$(port_of "$s")" --domain $DOMAIN --password $PASSWORD \
        --total "$USERS" --users "$USERS" --concurrency 20 --max-seconds 600 \
        --scram-cache "$WORK/$s.scram" >"$WORK/$s-check.json" 2>"$WORK/$s-check.err"; then
    log "$s: login check failed: $(tail -c 300 "$WORK/$s-check.json")"
    stop_current
    return 1
  fi
  if has "$WORKLOADS" login256; then
    "$LOAD" --workload login --mech SCRAM-SHA-256 --port "$(port_of "$s")" --domain $DOMAIN --password $PASSWORD \
      --total "$USERS" --users "$USERS" --concurrency 20 --max-seconds 600 \
      --scram-cache "$WORK/$s.scram" >/dev/null 2>&1 || { log "$s: SCRAM-SHA-256 not offered"; touch "$WORK/$s.no-sha256"; }
  fi
  stop_current
  # Every run starts from this state (accounts only), so archives do not grow across runs.
  rm -rf "$(data_of "$s").pristine"
  cp -a "$(data_of "$s")" "$(data_of "$s").pristine"
  log "$s: accounts ready ($((SECONDS - t0)) s)"
}

READY=()
XMPP_WORK=0
for w in login login256 messages paced muc idle; do has "$WORKLOADS" $w && XMPP_WORK=1; done
for s in "${AVAILABLE[@]}"; do
  if [[ $s == synapse || $s == cryptpad ]]; then READY+=("$s"); continue; fi
  if [[ $s == hearth ]] && (( ! XMPP_WORK )); then READY+=("$s"); continue; fi
  if create_users "$s"; then READY+=("$s"); else SKIPPED+=("$s: could not start or log in (see $WORK when run with --keep)"); fi
done
(( ${#READY[@]} )) || { log "no server available"; exit 1; }

# ------------------------------------------------------------------ workloads
run_one() {  # server workload run
  local s=$1 w=$2 r=$3 port args=() out
  port=$(port_of "$s")
  case "$w" in
    login) args=(--workload login --total "$LOGINS" --concurrency 50 --mech SCRAM-SHA-1) ;;
    login256) args=(--workload login --total "$LOGINS" --concurrency 50 --mech SCRAM-SHA-256) ;;
    messages) args=(--workload messages --clients "$CLIENTS" --messages "$MESSAGES") ;;
    paced) args=(--workload messages --clients "$CLIENTS" --messages "$PACED_MESSAGES" --rate "$PACED_RATE") ;;
    muc) args=(--workload muc --clients "$MUC_CLIENTS" --senders "$MUC_SENDERS" --messages "$MUC_MESSAGES" --concurrency 50) ;;
    idle) args=(--workload idle --conns "$CONNS" --sources 8 --concurrency 50) ;;
    matrix|cryptpad) run_http "$@"; return ;;
  esac
  if [[ "$w" == login256 && -e "$WORK/$s.no-sha256" ]]; then
    echo "{\"server\": \"$s\", \"bench\": \"$w\", \"run\": $r, \"errors\": \"SCRAM-SHA-256 not offered\"}" >>"$RESULTS"
    return
  fi
  restore_data "$s"
  start_server "$s" || { echo "{\"server\": \"$s\", \"bench\": \"$w\", \"run\": $r, \"errors\": \"did not start\"}" >>"$RESULTS"; return; }
  out=$("$LOAD" "${args[@]}" --port "$port" --domain $DOMAIN --password $PASSWORD --users "$USERS" \
          --server-pid "$SERVER_PID" --max-seconds 300 --label "$s" --scram-cache "$WORK/$s.scram" 2>>"$WORK/load.err" | tail -1) || true
  [[ "$out" == "{"* ]] || out='{"errors": "no result"}'
  echo "{\"server\": \"$s\", \"bench\": \"$w\", \"run\": $r, ${out#\{}" >>"$RESULTS"
  log "$s $w run $r: $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(", ".join(f"{k}={d[k]}" for k in ("per_s","p50_ms","p99_ms","per_conn_kib_'"${CONNS##*,}"'","lost","errors") if k in d))' "$out" 2>/dev/null)"
  stop_current
}

# Matrix and CryptPad runs: hearth against Synapse / CryptPad (hearth's HTTP listener).
run_http() {  # server workload run
  local s=$1 w=$2 r=$3 out line
  restore_data "$s"
  start_server "$s" || { echo "{\"server\": \"$s\", \"bench\": \"$w\", \"run\": $r, \"errors\": \"did not start\"}" >>"$RESULTS"; return; }
  if [[ $w == matrix ]]; then
    local port=$HEARTH_HTTP_PORT tok=()
    if [[ $s == hearth ]]; then
      local n=$(( $(tr ',' '\n' <<<"$MATRIX_LEVELS" | sort -n | tail -1) + 1 ))
      : >"$WORK/tokens"
      for ((i = 0; i < n; i++)); do
        "$HEARTHCTL" --config "$HEARTH_CFG" invite create | grep -oE 'token[^A-Za-z0-9_-]*[A-Za-z0-9_-]{8,}' | head -1 | grep -oE '[A-Za-z0-9_-]{8,}$' >>"$WORK/tokens"
      done
      tok=(--tokens "$WORK/tokens")
    else
      port=$SYNAPSE_PORT
    fi
    out=$("$MLOAD" --port "$port" "${tok[@]}" --levels "$MATRIX_LEVELS" \
            --messages "$MATRIX_MESSAGES" --server-pid "$SERVER_PID" --max-seconds 120 --label "$s" 2>>"$WORK/load.err") || true
    while read -r line; do
      [[ "$line" == "{"* ]] || continue
      local lv
      lv=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["senders"])' "$line")
      echo "{\"server\": \"$s\", \"bench\": \"matrix$lv\", \"run\": $r, ${line#\{}" >>"$RESULTS"
      log "$s matrix$lv run $r: $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(", ".join(f"{k}={d[k]}" for k in ("per_s","p50_ms","sync_p50_ms","sync_p99_ms","errors") if k in d))' "$line")"
    done <<<"$out"
    [[ "$out" == *"{"* ]] || { echo "{\"server\": \"$s\", \"bench\": \"matrix1\", \"run\": $r, \"errors\": \"no result (see load.err)\"}" >>"$RESULTS"; log "$s matrix run $r: no result: $(tail -c 300 "$WORK/load.err")"; }
  else
    local url="ws://127.0.0.1:$HEARTH_HTTP_PORT/cryptpad_websocket"
    [[ $s == cryptpad ]] && url="ws://127.0.0.1:$CRYPTPAD_WS_PORT/cryptpad_websocket"
    out=$("$CPLOAD" "$url" "$CP_CHANNELS" "$CP_CLIENTS" "$CP_MESSAGES" "$SERVER_PID" 120 2>>"$WORK/load.err" | tail -1) || true
    [[ "$out" == "{"* ]] || out='{"errors": "no result"}'
    echo "{\"server\": \"$s\", \"bench\": \"$w\", \"run\": $r, ${out#\{}" >>"$RESULTS"
    log "$s $w run $r: $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(", ".join(f"{k}={d[k]}" for k in ("per_s","deliveries_per_s","p50_ms","p99_ms","errors") if k in d))' "$out" 2>/dev/null)"
  fi
  stop_current
}
serves() {  # server workload
  case "$2" in
    matrix) [[ $1 == hearth || $1 == synapse ]] ;;
    cryptpad) [[ $1 == hearth || $1 == cryptpad ]] ;;
    idle) has "$IDLE_SERVERS" "$1" ;;
    *) [[ $1 == hearth || $1 == prosody || $1 == ejabberd ]] ;;
  esac
}

T0=$SECONDS
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for w in ${WORKLOADS//,/ }; do
  if [[ $w == bigroom ]]; then
    # hearth alone, one fill and RUNS measurement rounds; its own report.
    bigroom_out=${OUT:-$BENCH/results/$(date +%F).md}
    has "$SERVERS" hearth && "$BENCH/bigroom/bigroom.sh" --build "$BUILD" --runs "$RUNS" \
      --members "$BIGROOM_MEMBERS" --events "$BIGROOM_EVENTS" --out "${bigroom_out%.md}-bigroom.md" >/dev/null \
      || log "bigroom failed"
    continue
  fi
  for ((r = 1; r <= RUNS; r++)); do
    for s in "${READY[@]}"; do serves "$s" "$w" && run_one "$s" "$w" "$r"; done
  done
done
log "workloads done in $((SECONDS - T0)) s"

# ------------------------------------------------------------------ report
DATE=$(date +%F)
[[ -n "$OUT" ]] || OUT="$BENCH/results/$DATE.md"
mkdir -p "$(dirname "$OUT")"
{
  printf 'date=%s\n' "$DATE"
  printf 'nproc=%s\n' "$(nproc)"
  printf 'cpu=%s\n' "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  printf 'kernel=%s\n' "$(uname -sr)"
  printf 'mem=%s\n' "$(free -m | awk '/^Mem:/ {printf "%d MiB total, %d MiB available", $2, $7}')"
  printf 'load=%s (at the start: %s)\n' "$(cut -d' ' -f1-3 /proc/loadavg)" "$LOAD_START"
  printf 'hearth=%s\n' "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  printf 'prosody=%s\n' "$(dpkg-query -W -f='${Version}' prosody 2>/dev/null || echo -)"
  printf 'ejabberd=%s\n' "$(dpkg-query -W -f='${Version}' ejabberd 2>/dev/null || echo -)"
  printf 'synapse=%s\n' "$([[ " ${READY[*]} " == *" synapse "* ]] && echo "sid chroot $SYNAPSE_ROOT" || echo 'not available (skipped)')"
  printf 'cryptpad=%s\n' "$([[ " ${READY[*]} " == *" cryptpad "* ]] && echo "$CRYPTPAD_DIR" || echo 'not available (skipped)')"
  printf 'muc_clients=%s\nmuc_senders=%s\nmuc_messages=%s\nmatrix_messages=%s\ncp_channels=%s\ncp_clients=%s\ncp_messages=%s\n' \
    "$MUC_CLIENTS" "$MUC_SENDERS" "$MUC_MESSAGES" "$MATRIX_MESSAGES" "$CP_CHANNELS" "$CP_CLIENTS" "$CP_MESSAGES"
  printf 'runs=%s\nlogins=%s\nclients=%s\nmessages=%s\npaced_rate=%s\npaced_messages=%s\nconns=%s\nusers=%s\nquick=%s\n' \
    "$RUNS" "$LOGINS" "$CLIENTS" "$MESSAGES" "$PACED_RATE" "$PACED_MESSAGES" "$CONNS" "$USERS" "$QUICK"
  printf 'duration=%s\n' "$((SECONDS - T0))"
  printf 'peer_archive=%s\n' "$PEER_ARCHIVE"
  for m in "${SKIPPED[@]}"; do printf 'skipped=%s\n' "$m"; done
} >"$WORK/machine.txt"
python3 "$BENCH/report.py" "$WORK/machine.txt" "$RESULTS" >"$OUT"
cp "$RESULTS" "${OUT%.md}.jsonl"
cat "$OUT"
log "wrote $OUT (raw figures: ${OUT%.md}.jsonl)"
