#!/usr/bin/env bash
# Backup and restore throughput against a plain copy of the same bytes (issue 8, I05/I08).
#
#   bench/backup.sh [--db-mib N] [--blob-mib N] [--small-files N] [--level L] [--threads T] [--runs N]
#
# --level and --threads are passed to hearthctl backup when given; without them it runs
# with its defaults (what an operator gets).
#
# Builds a data directory (hearthd creates it; then a filler table makes the database
# N MiB of semi-compressible rows, plus blobs/ with large random files and many 4 KiB
# files, the I08 shape), starts hearthd on it, and times, each with an fsync at the end:
#   backup   hearthctl backup (online, through the running daemon) to one file
#   restore  hearthctl restore into a new directory (checksums verified, fsynced)
#   cp       cp -a of the same directory (not consistent while hearthd writes!), then sync -f
#   tar      tar | zstd -3 of the same directory (what people script by hand), then sync
#   disk     dd of the same number of bytes with oflag=direct: the disk's own write speed
# Then the continuous replica (ops.replica_dir, incident I05), RUNS times each (min/median/max):
#   the size of an incremental after a small change (one account added) next to the full;
#   time to a serving replacement: hearthctl restore --from-replica into a new directory,
#   then hearthd started on it until /health answers, in seconds per GB of data, next to
#   cp -a of the same bytes and dd of them (the disk's sequential write speed).
# MB/s are of the uncompressed bytes (database + files). Caches are warm (no root-only
# drop_caches), so reads come from memory: the figures compare the write paths.
set -euo pipefail
DB_MIB=256 BLOB_MIB=128 SMALL=2000 LEVEL="" THREADS="" RUNS=3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --db-mib) DB_MIB=$2; shift 2 ;;
    --blob-mib) BLOB_MIB=$2; shift 2 ;;
    --small-files) SMALL=$2; shift 2 ;;
    --level) LEVEL=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HEARTHD=${HEARTHD:-$ROOT/build/apps/hearthd/hearthd}
HEARTHCTL=${HEARTHCTL:-$ROOT/build/apps/hearthctl/hearthctl}
WORK=$(mktemp -d /var/tmp/hearth-bench-backup.XXXXXX)
PID=""
PID2=""
cleanup() {
  [[ -n "$PID" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  [[ -n "$PID2" ]] && kill "$PID2" 2>/dev/null && wait "$PID2" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

cat > "$WORK/h.toml" <<TOML
[server]
data_dir = "$WORK/data"
[http]
port = 0
https_port = 0
[xmpp]
c2s_port = 0
c2s_tls_port = 0
s2s_port = 0
[ops]
disk_reserve_mib = 0
TOML
start() {
  "$HEARTHD" -c "$WORK/h.toml" > "$WORK/hd.out" 2> "$WORK/hd.log" & PID=$!
  for _ in $(seq 500); do grep -q "Press Ctrl-C" "$WORK/hd.out" 2>/dev/null && return; sleep 0.02; done
  echo "hearthd did not start" >&2; cat "$WORK/hd.log" >&2; exit 1
}
start; kill "$PID"; wait "$PID" || true; PID=""
/usr/bin/python3 - "$WORK/data" "$DB_MIB" "$BLOB_MIB" "$SMALL" <<'PY'
import hashlib, os, random, sqlite3, sys
data, db_mib, blob_mib, small = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(7)
words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))).decode() for _ in range(5000)]
db = sqlite3.connect(os.path.join(data, "hearth.db"))
db.execute("CREATE TABLE IF NOT EXISTS bench_filler (id INTEGER PRIMARY KEY, body TEXT)")
row = 0
target = db_mib << 20
while row * 600 < target:
    db.executemany("INSERT INTO bench_filler (body) VALUES (?)",
                   [(" ".join(rng.choices(words, k=100)),) for _ in range(5000)])
    row += 5000
db.commit(); db.execute("PRAGMA wal_checkpoint(TRUNCATE)"); db.close()
def blob(content):
    d = hashlib.sha256(content).hexdigest()
    os.makedirs(os.path.join(data, "blobs", d[:2]), exist_ok=True)
    with open(os.path.join(data, "blobs", d[:2], d), "wb") as f: f.write(content)
for _ in range(blob_mib): blob(os.urandom(1 << 20))
for i in range(small): blob(os.urandom(2048) + b"x" * 2048 + str(i).encode())
PY
start
BYTES=$(cd "$WORK/data" && find . -type f ! -name 'hearth.db-*' ! -name '*.lock' -printf '%s\n' | awk '{s+=$1} END {print s}')
secs() { /usr/bin/python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.3f}")' "$1" "$2"; }
now() { date +%s.%N; }
rate() { /usr/bin/python3 -c 'import sys; b, s = int(sys.argv[1]), float(sys.argv[2]); print(f"{b / (1 << 20) / s:8.1f} MiB/s  ({s / (b / (1 << 30)):6.1f} s per GiB)")' "$1" "$2"; }

BACKUP_OPTS=()
[[ -n "$LEVEL" ]] && BACKUP_OPTS+=(--level "$LEVEL")
[[ -n "$THREADS" ]] && BACKUP_OPTS+=(--threads "$THREADS")
t0=$(now); "$HEARTHCTL" -c "$WORK/h.toml" backup "${BACKUP_OPTS[@]}" "$WORK/full.bak" 2> "$WORK/backup.log"; t1=$(now)
BACKUP_S=$(secs "$t0" "$t1")
t0=$(now); "$HEARTHCTL" restore "$WORK/full.bak" --data-dir "$WORK/restored" > "$WORK/restore.log"; t1=$(now)
RESTORE_S=$(secs "$t0" "$t1")
t0=$(now); cp -a "$WORK/data" "$WORK/cp" && sync -f "$WORK/cp"; t1=$(now)
CP_S=$(secs "$t0" "$t1")
t0=$(now); tar -C "$WORK/data" --exclude='hearth.db-*' --exclude='*.lock' --exclude='hearthd.sock' -cf - . | zstd -q -3 -o "$WORK/tar.zst" && sync -f "$WORK/tar.zst"; t1=$(now)
TAR_S=$(secs "$t0" "$t1")
t0=$(now); dd if=/dev/zero of="$WORK/dd" bs=1M count=$((BYTES >> 20)) oflag=direct status=none; t1=$(now)
DD_S=$(secs "$t0" "$t1")

echo "# backup/restore throughput ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r))"
echo "data: $((BYTES >> 20)) MiB (database ${DB_MIB} MiB of text rows, ${BLOB_MIB} x 1 MiB random blobs, ${SMALL} x 4 KiB files);"
echo "backup file $(( $(stat -c %s "$WORK/full.bak") >> 20 )) MiB (zstd level ${LEVEL:-default}, threads ${THREADS:-default}); tar.zst $(( $(stat -c %s "$WORK/tar.zst") >> 20 )) MiB"
printf '  %-34s %7ss  %s\n' "hearthctl backup (online)" "$BACKUP_S" "$(rate "$BYTES" "$BACKUP_S")"
printf '  %-34s %7ss  %s\n' "hearthctl restore (verified)" "$RESTORE_S" "$(rate "$BYTES" "$RESTORE_S")"
printf '  %-34s %7ss  %s\n' "plain copy (cp -a + sync)" "$CP_S" "$(rate "$BYTES" "$CP_S")"
printf '  %-34s %7ss  %s\n' "tar | zstd -3 (+ sync)" "$TAR_S" "$(rate "$BYTES" "$TAR_S")"
printf '  %-34s %7ss  %s\n' "disk sequential write (dd direct)" "$DD_S" "$(rate "$BYTES" "$DD_S")"
echo "hearthctl: $(tail -1 "$WORK/backup.log")"
echo "hearthctl: $(tail -1 "$WORK/restore.log")"

# ---- the continuous replica -------------------------------------------------------------
rm -rf "$WORK/restored" "$WORK/cp" "$WORK/dd" "$WORK/tar.zst" "$WORK/full.bak"
kill "$PID"; wait "$PID" || true; PID=""
mkdir -p "$WORK/replica"
printf 'replica_dir = "%s"\nreplica_interval_seconds = 2\n' "$WORK/replica" >> "$WORK/h.toml"
start
http_port() { grep -o 'http://[^/]*:[0-9]*' "$1" 2>/dev/null | head -1 || true; }
URL=$(http_port "$WORK/hd.out")
metric() { curl -s "$URL/metrics" | awk -v k="$1" '$1 == k {print $2}'; }
wait_metric() {  # name, minimum value; up to 30 minutes (the first full backup of a big directory)
  for _ in $(seq 18000); do
    v=$(metric "$1"); [[ -n "$v" ]] && /usr/bin/python3 -c 'import sys; sys.exit(float(sys.argv[1]) < float(sys.argv[2]))' "$v" "$2" && return
    sleep 0.1
  done
  echo "timed out waiting for $1 >= $2" >&2; exit 1
}
wait_metric 'hearth_replica_rounds_total{result="full"}' 1
echo "bench secret pw" | "$HEARTHCTL" -c "$WORK/h.toml" user add bench@localhost > /dev/null
wait_metric 'hearth_replica_rounds_total{result="incremental"}' 1
CHAIN=$(ls -d "$WORK/replica"/chain-* | tail -1)
FULL_B=$(stat -c %s "$CHAIN/000000.bak"); INCR_B=$(stat -c %s "$CHAIN/000001.bak")
kill -9 "$PID"; wait "$PID" 2>/dev/null || true; PID=""

serve_s=() restore_s=() cp_s=() dd_s=()
for run in $(seq "$RUNS"); do
  NEW="$WORK/new$run"
  sed "s|^data_dir = .*|data_dir = \"$NEW\"|; /^replica_/d" "$WORK/h.toml" > "$WORK/new.toml"
  sync; t0=$(now)
  "$HEARTHCTL" restore --from-replica "$WORK/replica" --data-dir "$NEW" > "$WORK/replica-restore.log"
  restore_s+=("$(secs "$t0" "$(now)")")
  "$HEARTHD" -c "$WORK/new.toml" > "$WORK/new.out" 2> "$WORK/new.log" & PID2=$!
  for _ in $(seq 6000); do  # the banner names the port once it listens; then /health must answer
    NEW_URL=$(http_port "$WORK/new.out")
    [[ -n "$NEW_URL" ]] && [[ $(curl -s -o /dev/null -w '%{http_code}' "$NEW_URL/health") == 200 ]] && break
    sleep 0.01
  done
  t1=$(now)
  serve_s+=("$(secs "$t0" "$t1")")
  kill "$PID2"; wait "$PID2" || true; PID2=""
  rm -rf "$NEW"
  t0=$(now); cp -a "$WORK/data" "$WORK/cp" && sync -f "$WORK/cp"; t1=$(now); cp_s+=("$(secs "$t0" "$t1")"); rm -rf "$WORK/cp"
  t0=$(now); dd if=/dev/zero of="$WORK/dd" bs=1M count=$((BYTES >> 20)) oflag=direct status=none; t1=$(now); dd_s+=("$(secs "$t0" "$t1")"); rm -f "$WORK/dd"
done
stats() {  # bytes, seconds...: min/median/max of seconds per GB (10^9 bytes) and MB/s
  /usr/bin/python3 - "$@" <<'PY'
import statistics, sys
b = int(sys.argv[1]); s = sorted(float(x) for x in sys.argv[2:])
gb = b / 1e9
per = [x / gb for x in s]
print(f"{per[0]:6.2f} / {statistics.median(per):6.2f} / {per[-1]:6.2f} s per GB   "
      f"({b / 1e6 / s[-1]:.0f} / {b / 1e6 / statistics.median(s):.0f} / {b / 1e6 / s[0]:.0f} MB/s)")
PY
}
echo
echo "# continuous replica ($RUNS runs; min / median / max)"
echo "replica: full $((FULL_B >> 10)) KiB, incremental after one account was added $((INCR_B >> 10)) KiB ($(/usr/bin/python3 -c "import sys; print(f'{100 * int(sys.argv[1]) / int(sys.argv[2]):.3f}')" "$INCR_B" "$FULL_B") % of the full)"
printf '  %-44s %s\n' "restore --from-replica + hearthd until /health" "$(stats "$BYTES" "${serve_s[@]}")"
printf '  %-44s %s\n' "  of which restore --from-replica (verified)" "$(stats "$BYTES" "${restore_s[@]}")"
printf '  %-44s %s\n' "plain copy (cp -a + sync)" "$(stats "$BYTES" "${cp_s[@]}")"
printf '  %-44s %s\n' "disk sequential write (dd direct)" "$(stats "$BYTES" "${dd_s[@]}")"
echo "seconds: serving ${serve_s[*]}; restore ${restore_s[*]}; cp ${cp_s[*]}; dd ${dd_s[*]}"
echo "hearthctl: $(tail -1 "$WORK/replica-restore.log")"
