#!/usr/bin/env bash
# README command 2: install what is missing, build, and run the whole test suite (unit,
# integration, resilience) with CTest, which ends with its summary line.
#   scripts/test.sh              normal build in build-test/
#   scripts/test.sh --sanitize   ASan + UBSan build in build-asan/
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
dir=build-test
opts=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DHEARTH_TESTS=ON -DHEARTH_SANITIZE=OFF)
if [[ "${1:-}" == "--sanitize" ]]; then
  dir=build-asan
  opts=(-DCMAKE_BUILD_TYPE=Debug -DHEARTH_TESTS=ON -DHEARTH_SANITIZE=ON)
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
start=$(date +%s)
scripts/build.sh "$dir" "${opts[@]}" | tail -n 1
echo "build: $(( $(date +%s) - start )) s in $dir"
ctest --test-dir "$dir" --output-on-failure -j"$(nproc)" --timeout 300
