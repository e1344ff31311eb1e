#!/usr/bin/env bash
# Runs every test of the project: the Rust tests, the Python, Node and Go
# clients built with those languages' stock gRPC tools (and the helpers
# protoc-gen-errmap generates for them), and the buf checks of the proto
# contract. This is the README's test command; .ci/run calls it
# as is. It installs what it needs: Python packages from PyPI into
# target/interop/venv, Node packages from the npm registry into
# tests/interop/node/node_modules (buf, protoc-gen-es, Connect and
# TypeScript included) and examples/web/node_modules, and Debian's chromium,
# prometheus, Go with its gRPC packages, buildah, podman and runc, and
# kubectl (kubernetes-client) (apt-get) when they are missing.
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

echo "==> Building the errmap binary, protoc-gen-errmap and the shop example's server and relay for the interop tests"
cargo build --locked --bin errmap --bin protoc-gen-errmap
cargo build --locked -p shop-example --example shop-server --example shop-relay
export ERRMAP_BIN="$ROOT/target/debug/errmap"
export SHOP_BIN="$ROOT/target/debug/examples/shop-server"
export RELAY_BIN="$ROOT/target/debug/examples/shop-relay"
export PROTOC_GEN_ERRMAP="$ROOT/target/debug/protoc-gen-errmap"
# buf finds `local: protoc-gen-errmap` on PATH.
export PATH="$ROOT/target/debug:$PATH"

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

echo "==> Debian's buildah, podman and runc, kubectl and openssl, for the image and the Kubernetes manifests (deploy/)"
# With the packages podman recommends, named, since apt_install leaves
# recommends out: the set the image test was made to pass with.
for tool in buildah podman runc; do
  if ! command -v "$tool" >/dev/null; then
    echo "installing Debian's buildah, podman and runc (apt-get)"
    apt_install buildah podman runc conmon containernetworking-plugins netavark \
      aardvark-dns slirp4netns uidmap fuse-overlayfs catatonit iptables
    break
  fi
done
# Any kubectl with a built-in kustomize renders the base alike; Debian's
# kubernetes-client (1.20) when there is none.
if ! kubectl kustomize --help >/dev/null 2>&1; then
  echo "installing Debian's kubernetes-client (apt-get)"
  apt_install kubernetes-client
fi
# kubectl 1.20 (Debian's kubernetes-client) too, unpacked, not installed
# (it would clash with another kubectl package): the manifests must render
# the same with its old built-in kustomize.
KUBECTL_OLD="$ROOT/target/deploy/kubectl-1.20/usr/bin/kubectl"
if [ ! -x "$KUBECTL_OLD" ]; then
  echo "unpacking Debian's kubernetes-client (apt-get download) into target/deploy/kubectl-1.20"
  if [ -z "${APT_UPDATED:-}" ]; then
    $([ "$(id -u)" -ne 0 ] && echo sudo) apt-get update -qq
    APT_UPDATED=1
  fi
  rm -rf "$ROOT/target/deploy/download" && mkdir -p "$ROOT/target/deploy/download"
  (cd "$ROOT/target/deploy/download" && apt-get download -qq kubernetes-client)
  dpkg -x "$ROOT"/target/deploy/download/kubernetes-client_*.deb "$ROOT/target/deploy/kubectl-1.20"
  rm -rf "$ROOT/target/deploy/download"
fi
"$KUBECTL_OLD" version --client 2>/dev/null | sed -n 1p | cut -c1-80
export KUBECTL_OLD
# openssl makes the TLS overlay's Secrets.
if ! command -v openssl >/dev/null; then
  echo "installing Debian's openssl (apt-get)"
  apt_install openssl
fi
buildah --version
podman --version
kubectl version --client 2>/dev/null | sed -n 1,2p

echo "==> Python interop (grpcio, grpcio-status, grpcio-reflection, grpcio-health-checking; the generated helpers under mypy --strict; deploy/ with kubernetes-validate, buildah and podman)"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r tests/interop/python/requirements.txt
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/interop/python

echo "==> The protos of the typed-helper tests: errmap's, the shop's, and google.rpc's from PyPI's googleapis-common-protos"
PROTOS="$ROOT/target/interop/protos"
rm -rf "$PROTOS"
mkdir -p "$PROTOS/google/rpc"
cp -r proto/errmap "$PROTOS/"
cp -r examples/shop/proto/shop "$PROTOS/"
GOOGLE_RPC=$("$VENV/bin/python" -c 'import google.rpc; print(list(google.rpc.__path__)[0])')
cp "$GOOGLE_RPC/status.proto" "$GOOGLE_RPC/error_details.proto" "$PROTOS/google/rpc/"

echo "==> Node interop (@grpc/grpc-js, @grpc/proto-loader, protobufjs; Connect and the generated TypeScript under tsc --strict)"
(
  cd tests/interop/node
  npm ci --no-audit --no-fund --loglevel=error
  npm run typed
  npm test
)

BUF="$ROOT/tests/interop/node/node_modules/.bin/buf"

echo "==> Go interop (Debian's golang packages, offline: grpc-go, genproto, protobuf; the generated Go under go vet)"
# golang-goprotobuf-dev is bookworm's transitional package for
# github.com/golang/protobuf 1.3, which predates google.golang.org/protobuf
# and conflicts with its 1.5 successor; the helpers import
# google.golang.org/protobuf, so the 1.5 line is installed in its place.
GO_PACKAGES="golang-go golang-google-grpc-dev golang-google-genproto-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev"
if ! command -v go >/dev/null 2>&1 || [ ! -d /usr/share/gocode/src/google.golang.org/protobuf ] \
   || [ ! -d /usr/share/gocode/src/google.golang.org/grpc ] \
   || [ ! -d /usr/share/gocode/src/google.golang.org/genproto/googleapis/rpc/errdetails ]; then
  echo "installing Debian's Go and its gRPC packages (apt-get)"
  # shellcheck disable=SC2086
  apt_install $GO_PACKAGES
fi
go version
GOPATH_DIR="$ROOT/target/interop/gopath"
rm -rf "$GOPATH_DIR"
mkdir -p "$GOPATH_DIR/src"
ln -s "$ROOT/tests/interop/go" "$GOPATH_DIR/src/errmapinterop"
"$BUF" generate "$PROTOS" --template tests/interop/go/buf.gen.yaml -o "$GOPATH_DIR/src"
"$VENV/bin/python" tests/interop/go/readme_snippet.py
(
  cd "$GOPATH_DIR/src/errmapinterop"
  export GO111MODULE=off GOFLAGS= GOPATH="$GOPATH_DIR:/usr/share/gocode" GOCACHE="$ROOT/target/interop/gocache"
  UNFORMATTED=$(gofmt -l . "$GOPATH_DIR/src/github.com" "$GOPATH_DIR/src/example.com")
  if [ -n "$UNFORMATTED" ]; then
    echo "error: not gofmt-clean: $UNFORMATTED"
    exit 1
  fi
  go vet . github.com/errmap/errmap/gen/go/errmap/v1 example.com/shop/gen/go/shop/v1
  go test -count=1 -v .
)

echo "==> gen/: what buf generate writes from proto/ today (buf.gen.yaml)"
GEN_NOW="$ROOT/target/interop/gen-now"
rm -rf "$GEN_NOW"
mkdir -p "$GEN_NOW"
PATH="$ROOT/tests/interop/node/node_modules/.bin:$PATH" "$BUF" generate -o "$GEN_NOW"
if ! diff -r gen "$GEN_NOW/gen"; then
  echo "error: gen/ is stale; run buf generate at the repository root (README, \"Other languages: generated helpers\")"
  exit 1
fi
echo "gen/ is current"

echo "==> buf lint, format and breaking (against buf/errmap-v1.binpb)"
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
