#!/usr/bin/env bash
# Runs every test of the project: the Rust tests, the Python and Node
# clients built with those languages' stock gRPC tools, and the buf checks
# of the proto contract. This is the README's test command; .ci/run calls it
# as is. It installs what it needs: Python packages from PyPI into
# target/interop/venv, Node packages from the npm registry into
# tests/interop/node/node_modules (buf included) and examples/web/node_modules,
# and Debian's chromium and prometheus (apt-get) when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/target/interop/venv"

echo "==> One rustls crypto provider (ring): two would panic at first use"
if cargo tree --locked --workspace -e normal -i aws-lc-rs >/dev/null 2>&1; then
  echo "error: aws-lc-rs is in the build beside ring"
  exit 1
fi
cargo tree --locked --workspace -e normal -i ring | head -3

echo "==> The light errmap crate: at most 50 crates, none of the server side's"
LIGHT=$(cargo tree --locked -e normal -p errmap --prefix none | sed 's/ (\*)//; s/ (proc-macro)//' | awk '{print $1}' | sort -u)
LIGHT_COUNT=$(printf '%s\n' "$LIGHT" | grep -c .)
echo "errmap's normal dependency tree: $LIGHT_COUNT crates (itself included)"
if [ "$LIGHT_COUNT" -gt 50 ]; then
  echo "error: the errmap crate's tree grew past 50 crates"
  exit 1
fi
for heavy in rustls tokio-rustls x509-parser askama prometheus-client hyper clap \
             tracing-subscriber jsonwebtoken tower-http rsa p256 ed25519-dalek; do
  if printf '%s\n' "$LIGHT" | grep -qx "$heavy"; then
    echo "error: the errmap crate pulls $heavy, which belongs to the server side"
    exit 1
  fi
done

echo "==> Rust tests (unit, integration, doc, example)"
cargo test --locked --workspace

echo "==> Building the errmap binary and the shop example's server for the interop tests"
cargo build --locked --bin errmap
cargo build --locked -p shop-example --example shop-server
export ERRMAP_BIN="$ROOT/target/debug/errmap"
export SHOP_BIN="$ROOT/target/debug/examples/shop-server"

apt_install() {
  local SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  if [ -z "${APT_UPDATED:-}" ]; then
    $SUDO apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

echo "==> Debian's prometheus, for the scrape test"
PROMETHEUS="${PROMETHEUS:-/usr/bin/prometheus}"
if [ ! -x "$PROMETHEUS" ]; then
  echo "installing Debian's prometheus (apt-get)"
  apt_install prometheus
  PROMETHEUS=/usr/bin/prometheus
fi
"$PROMETHEUS" --version 2>&1 | sed -n 1p
export PROMETHEUS

echo "==> Python interop (grpcio, grpcio-status, grpcio-reflection, grpcio-health-checking)"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r tests/interop/python/requirements.txt
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/interop/python

echo "==> Node interop (@grpc/grpc-js, @grpc/proto-loader, protobufjs)"
(
  cd tests/interop/node
  npm ci --no-audit --no-fund --loglevel=error
  npm test
)

echo "==> buf lint, format and breaking (against buf/errmap-v1.binpb)"
BUF="$ROOT/tests/interop/node/node_modules/.bin/buf"
"$BUF" --version
"$BUF" lint
"$BUF" format --diff --exit-code
"$BUF" breaking --against buf/errmap-v1.binpb
echo "buf: lint, format and breaking passed"

echo "==> errmap check: the catalog as built keeps the clients of the last release's"
CHECK_SET="$ROOT/target/interop/errmap-now.binpb"
mkdir -p "$(dirname "$CHECK_SET")"
"$BUF" build -o "$CHECK_SET"
"$ERRMAP_BIN" check "$CHECK_SET" --against buf/errmap-v1.binpb

echo "==> Browser: examples/web in Debian's chromium (puppeteer-core, @connectrpc/connect-web)"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  echo "installing Debian's chromium (apt-get)"
  apt_install chromium
  CHROMIUM=/usr/bin/chromium
fi
"$CHROMIUM" --version
export CHROMIUM
(
  cd examples/web
  npm ci --no-audit --no-fund --loglevel=error
  npm run build
  npm test
)
