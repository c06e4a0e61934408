#!/usr/bin/env bash
# Bounded libFuzzer runs with clang (ASan + UBSan), for CI and by hand:
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Default: 60 s each for the XMPP stream parser and the SASL mechanisms. Every target in
# tests/fuzz works (fuzz_netflux, fuzz_canonical_json, fuzz_federation, ...); the long runs
# are documented in tests/fuzz/README.md. New inputs the fuzzer finds stay in a temporary
# copy of the corpus; a crash leaves its input in build-fuzz/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
[[ $# -gt 0 ]] && shift
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(fuzz_xml_stream fuzz_sasl)
scripts/install-deps.sh
dir=build-fuzz
if [[ ! -f "$dir/build.ninja" ]]; then
  # The libraries under test get coverage instrumentation too, not only the harness.
  CC=clang CXX=clang++ cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHEARTH_TESTS=ON \
    -DHEARTH_FUZZ=ON -DHEARTH_SANITIZE=OFF -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link,address,undefined" \
    -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined" >/dev/null
fi
ninja -C "$dir" "${targets[@]}"
for target in "${targets[@]}"; do
  corpus=$(mktemp -d)
  cp -r "tests/fuzz/corpus/${target#fuzz_}/." "$corpus/"
  echo "fuzz: $target for $seconds s"
  status=0
  (cd "$dir" && "tests/fuzz/$target" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 >"$target.log" 2>&1) || status=$?
  grep -E '^(stat::number_of_executed_runs|stat::peak_rss_mb)|ERROR|SUMMARY|^Done' "$dir/$target.log" || true
  rm -rf "$corpus"
  [[ $status -eq 0 ]] || { echo "fuzz: $target failed (input saved in $dir)" >&2; exit 1; }
done
