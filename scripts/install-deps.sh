#!/usr/bin/env bash
# Installs, from Debian 12 packages only, everything hearth needs to build, run and test.
# Safe to run again: it does nothing when every package is already installed.
set -euo pipefail

packages=(
  # build
  cmake ninja-build ccache g++ pkg-config mold
  # libraries (reasons: docs/dependencies.md)
  libboost1.81-dev libssl-dev libsodium-dev libsqlite3-dev libfmt-dev libtomlplusplus-dev
  libcli11-dev libexpected-dev libsimdjson-dev libzstd-dev libexpat1-dev libicu-dev libidn2-dev
  libpng-dev libjpeg62-turbo-dev
  # runtime tools
  openssl ca-certificates
  # tests
  libgtest-dev libgmock-dev librapidcheck-dev python3 sqlite3 procps curl python3-slixmpp profanity tmux
  python3-nacl
  python3-matrix-nio python3-olm python3-cryptography chromium python3-yaml python3-jsonschema
  # bounded libFuzzer runs (scripts/fuzz.sh, called by .ci/run)
  clang libclang-rt-14-dev
  # the remote server of tests/integration/test_xmpp_federation_prosody.py (started by the test)
  prosody lua-unbound
)

# CryptPad's client libraries for the integration tests (tests/integration/cryptpad,
# pinned by its package-lock.json). Node 20 and npm come from the machine image.
install_node_test_packages() {
  local dir
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/integration/cryptpad"
  if [[ -d "$dir/node_modules/chainpad-netflux" ]]; then return 0; fi
  if ! command -v npm >/dev/null; then
    echo "install-deps: npm not found; the CryptPad client-library tests will be skipped" >&2
    return 0
  fi
  echo "install-deps: npm ci in $dir" >&2
  (cd "$dir" && npm ci --no-audit --no-fund >/dev/null)
}

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
# Converse.js and playwright-core for tests/integration/test_xmpp_websocket.py (pinned by
# tests/integration/web/package-lock.json; the browser is Debian's chromium).
install_web_test_deps() {
  local dir
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/integration/web"
  [[ -d "$dir/node_modules/converse.js" && -d "$dir/node_modules/playwright-core" ]] && return 0
  if ! command -v npm >/dev/null; then
    echo "install-deps: npm is needed for the Converse.js test" >&2
    return 0
  fi
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
    echo "install-deps: npm ci failed in $dir; integration.xmpp_websocket will fail" >&2
}

# matrix-js-sdk for tests/integration/test_matrix_js.py, from npm at the versions
# package-lock.json pins (needs node >= 20, which the SDK requires).
install_js_test_deps() {
  local dir
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/integration/js"
  [[ -d "$dir/node_modules/matrix-js-sdk" ]] && return 0
  if ! command -v npm >/dev/null || ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 20 ? 1 : 0)' 2>/dev/null; then
    echo "install-deps: node >= 20 and npm are needed for the matrix-js-sdk test" >&2
    return 0
  fi
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
    echo "install-deps: npm ci failed in $dir; integration.matrix_js will fail" >&2
}

if [[ ${#missing[@]} -eq 0 ]]; then
  install_node_test_packages
  install_js_test_deps
  install_web_test_deps
  exit 0
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
  sudo="sudo"
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q >/dev/null
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
# The tests start their own Prosody; a system service installed just now would hold the
# XMPP ports that hearthd's defaults use.
if [[ " ${missing[*]} " == *" prosody "* ]]; then
  if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    $sudo systemctl disable --now prosody >/dev/null 2>&1 || true
  elif [[ -x /etc/init.d/prosody ]]; then
    $sudo /etc/init.d/prosody stop >/dev/null 2>&1 || true
  fi
fi
install_node_test_packages
install_js_test_deps
install_web_test_deps
