#!/usr/bin/env bash
# Builds errmap's image FROM scratch with buildah, into an OCI archive.
#
#   deploy/build-image.sh [--binary PATH] [--output FILE] [--tag NAME]
#
# --binary  the errmap binary to ship (default: target/release/errmap, built
#           with `cargo build --release --bin errmap` when missing)
# --output  the OCI archive to write (default: target/errmap-image.oci.tar)
# --tag     the image's name (default: errmap:<version of the binary>)
#
# The context it stages (target/image-context/rootfs) holds the binary, the
# libraries `ldd` says it links (the dynamic loader included), the CA roots
# of this machine, and /etc/passwd and /etc/group naming user 65532.
# buildah runs with the vfs storage driver, which needs no kernel overlay
# support; STORAGE_DRIVER overrides it.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BINARY="$ROOT/target/release/errmap"
OUTPUT="$ROOT/target/errmap-image.oci.tar"
TAG=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BINARY="$2"; shift 2 ;;
    --output) OUTPUT="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
command -v buildah >/dev/null || {
  echo "build-image.sh: buildah is not installed (Debian: apt-get install buildah)" >&2
  exit 1
}
if [ ! -x "$BINARY" ]; then
  if [ "$BINARY" = "$ROOT/target/release/errmap" ]; then
    echo "==> building $BINARY (cargo build --release --bin errmap)"
    (cd "$ROOT" && cargo build --release --bin errmap)
  else
    echo "build-image.sh: no executable at $BINARY" >&2
    exit 1
  fi
fi
VERSION=$("$BINARY" --version | awk '{print $NF}')
TAG="${TAG:-errmap:$VERSION}"

CONTEXT="$ROOT/target/image-context"
echo "==> staging $CONTEXT/rootfs"
rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/rootfs/usr/local/bin" "$CONTEXT/rootfs/etc/ssl/certs"
cp "$BINARY" "$CONTEXT/rootfs/usr/local/bin/errmap"
# Every library the binary links, at the path the loader looks for it.
ldd "$BINARY" | awk '/=> \//{print $3} /^\t\//{print $1}' | sort -u | while read -r lib; do
  mkdir -p "$CONTEXT/rootfs$(dirname "$lib")"
  cp -L "$lib" "$CONTEXT/rootfs$lib"
  echo "    $lib"
done
CA=/etc/ssl/certs/ca-certificates.crt
if [ -f "$CA" ]; then
  cp "$CA" "$CONTEXT/rootfs/etc/ssl/certs/ca-certificates.crt"
else
  echo "build-image.sh: no CA roots at $CA (Debian: apt-get install ca-certificates)" >&2
  exit 1
fi
printf 'errmap:x:65532:65532:errmap:/nonexistent:/sbin/nologin\n' > "$CONTEXT/rootfs/etc/passwd"
printf 'errmap:x:65532:\n' > "$CONTEXT/rootfs/etc/group"
cp "$ROOT/deploy/Containerfile" "$CONTEXT/Containerfile"

export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}"
echo "==> buildah bud -t $TAG (storage driver $STORAGE_DRIVER)"
buildah bud --quiet --layers=false -f "$CONTEXT/Containerfile" -t "$TAG" "$CONTEXT"
mkdir -p "$(dirname "$OUTPUT")"
rm -f "$OUTPUT"
echo "==> buildah push $TAG oci-archive:$OUTPUT"
buildah push --quiet "$TAG" "oci-archive:$OUTPUT:$TAG"
echo "==> $TAG: $(du -h "$OUTPUT" | cut -f1) in $OUTPUT"
