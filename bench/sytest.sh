#!/usr/bin/env bash
# Runs SyTest (matrix-org/sytest, Matrix's black-box conformance suite) against a hearthd
# built from this tree, started fresh on loopback with open registration. Not part of
# scripts/test.sh: SyTest's code never enters this repository, it is run beside it.
#
#   bench/sytest.sh [--sytest DIR] [--hearthd PATH] [--port N] [--out DIR] [-- extra run-tests.pl args]
#
# Needs:
#   - a SyTest checkout in DIR (default /work/sytest-run/sytest): in a session,
#     `fetch github:matrix-org/sytest`, then `git --git-dir=<mirror> archive HEAD | tar -x -C DIR`;
#   - its Perl modules from Debian (listed in ../shared/tools/sytest-shims/DEBIAN-DEPS.txt,
#     plus libcryptx-perl), installed below when missing;
#   - the shims for the two modules Debian lacks (Crypt::Ed25519, Net::Async::HTTP::Server)
#     in SHIMS (default /work/shared/tools/sytest-shims), put on PERL5LIB.
# Writes OUT/sytest.tap (TAP), OUT/sytest.stderr, OUT/hearthd.log and OUT/summary.txt: the
# pass / fail / skip counts and, per SyTest file with failures, its OK / FAIL / SKIP counts.
# About 10 minutes on 2 cores.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
sytest=/work/sytest-run/sytest
shims=${SHIMS:-/work/shared/tools/sytest-shims}
hearthd="$here/build-test/apps/hearthd/hearthd"
port=28008
out=""  # default: results/<date> beside the SyTest checkout (its output stays out of this repo)
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --sytest) sytest="$2"; shift 2 ;;
    --hearthd) hearthd="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "sytest.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n "$out" ]] || out="$(dirname "$sytest")/results/$(date -u +%Y%m%d-%H%M)"
[[ -x "$sytest/run-tests.pl" ]] || { echo "sytest.sh: no SyTest in $sytest (see the header of this script)" >&2; exit 2; }
[[ -x "$hearthd" ]] || { echo "sytest.sh: no hearthd at $hearthd (build it first)" >&2; exit 2; }

perl_packages=(libclass-method-modifiers-perl libdata-dump-perl libdbi-perl libdbd-pg-perl
  libdigest-hmac-perl libemail-address-xs-perl libemail-mime-perl libfile-slurper-perl
  libfuture-perl libhttp-message-perl libio-async-perl libio-async-ssl-perl libio-socket-ssl-perl
  libjson-perl liblist-utilsby-perl libmodule-pluggable-perl libnet-async-http-perl
  libnet-ssleay-perl libstruct-dumb-perl liburi-perl libyaml-libyaml-perl libcryptx-perl)
missing=()
for p in "${perl_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo=sudo
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
  echo "sytest.sh: something already answers on port $port; pick another with --port" >&2
  exit 2
fi
mkdir -p "$out"
work="$(mktemp -d /tmp/hearth-sytest-XXXXXX)"
cat >"$work/hearth.toml" <<EOF
[server]
data_dir = "$work/data"
[[domain]]
name = "localhost"
registration = "open"
[http]
port = $port
https_port = -1
[xmpp]
c2s_port = -1
c2s_tls_port = -1
[accounts]
scram_iterations = 4096
[matrix]
# SyTest's push gateway listens on loopback.
push_to_private_addresses = true
[limits]
requests_per_second_per_ip = 100000
request_burst_per_ip = 100000
max_connections_per_ip = 10000
EOF

"$hearthd" --config "$work/hearth.toml" >"$out/hearthd.stdout" 2>"$out/hearthd.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$work"' EXIT
deadline=$((SECONDS + 30))
until curl -fsS "http://127.0.0.1:$port/_matrix/client/versions" >/dev/null 2>&1; do
  kill -0 "$pid" 2>/dev/null || { echo "sytest.sh: hearthd exited; see $out/hearthd.log" >&2; exit 1; }
  (( SECONDS < deadline )) || { echo "sytest.sh: hearthd did not answer in 30 s" >&2; exit 1; }
  sleep 0.2
done

cd "$sytest"
PERL5LIB="$shims${PERL5LIB:+:$PERL5LIB}" ./run-tests.pl -I Manual -L "http://127.0.0.1:$port" \
  --server-name localhost -O tap -a "${extra[@]}" >"$out/sytest.tap" 2>"$out/sytest.stderr" || true

python3 - "$out/sytest.tap" "$out/sytest.stderr" <<'PY' | tee "$out/summary.txt"
import collections, re, sys
counts = collections.Counter()
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"(not ok|ok) \d+ (.*)", line.rstrip("\n"))
    if m:
        kind = "skipped" if "# skip" in m.group(2) else "passed" if m.group(1) == "ok" else \
            "expected-fail" if m.group(2).startswith("(expected fail)") else "failed"
        counts[kind] += 1
print(", ".join(f"{k} {counts[k]}" for k in ("passed", "failed", "expected-fail", "skipped")),
      f"total {sum(counts.values())}")
# SyTest names each test file on stderr, then "Test N name... OK|FAIL|SKIP" per test.
per_file = collections.defaultdict(collections.Counter)
current = "?"
for line in open(sys.argv[2], errors="replace"):
    line = line.rstrip("\n")
    if re.match(r"^tests/\S+:$", line):
        current = line[:-1]
    m = re.search(r"\.\.\. (OK|FAIL|SKIP|EXPECTED FAIL)$", line)
    if m:
        per_file[current][m.group(1)] += 1
print("per file (OK / FAIL / SKIP), files with failures:")
for f, c in sorted(per_file.items()):
    if c["FAIL"]:
        print(f"  {f}: {c['OK']} / {c['FAIL']} / {c['SKIP']}")
PY
