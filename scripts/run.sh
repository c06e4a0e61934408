#!/usr/bin/env bash
# README command 1: install what is missing, build, and start hearthd on its defaults
# (SQLite in ./data, domain localhost, a self-signed certificate generated once).
# Extra arguments go to hearthd (for example: --config hearth.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh build -DCMAKE_BUILD_TYPE=Release -DHEARTH_TESTS=OFF >/dev/null
exec build/apps/hearthd/hearthd "$@"
