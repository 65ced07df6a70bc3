#!/usr/bin/env bash
# Build the bridge's OCI image: a static (musl) bridge binary for linux/amd64 and
# linux/arm64, cross-compiled with cargo-zigbuild, written with
# scripts/build-bridge-image.py into an OCI image layout (no Docker engine):
#
#   target/image/stashless-bridge/{oci-layout,index.json,blobs/sha256/...}
#
#   bash scripts/build-bridge-image.sh            # build both binaries, write the image
#   STASHLESS_BRIDGE_IMAGE=/some/dir bash scripts/build-bridge-image.sh   # elsewhere
#   bash scripts/build-bridge-image.sh --image-only   # reuse the built binaries
#   bash scripts/build-bridge-image.sh --with-test-tools   # also apt-get what
#       tests/tests/bridge_image.rs reads it with when missing: skopeo, umoci, qemu-user
#       (runs the arm64 binary) and docker-registry (a local registry to push to)
#
# Push it with skopeo (Debian's `skopeo` package), every platform at once, keeping the
# index digest the build printed (the module's bridge_image_digest):
#
#   skopeo copy --all --preserve-digests --digestfile target/image/stashless-bridge.digest \
#     oci:target/image/stashless-bridge:<version> docker://<registry>/stashless-bridge:<tag>
#
# cargo-zigbuild and zig come from PyPI at pinned versions, in a venv under
# ${STASHLESS_CACHE:-~/.cache/stashless}/venv-zig; the musl standard libraries from rustup.
# The binaries are built in ${STASHLESS_CACHE}/target-cross (cross builds only).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CACHE="${STASHLESS_CACHE:-$HOME/.cache/stashless}"
OUT="${STASHLESS_BRIDGE_IMAGE:-$ROOT/target/image/stashless-bridge}"
export CARGO_TARGET_DIR="$CACHE/target-cross"
VENV="$CACHE/venv-zig"
CARGO_ZIGBUILD_VERSION=0.24.1
ZIGLANG_VERSION=0.15.2
# image platform (OCI "architecture") -> Rust target
declare -A TARGETS=([amd64]=x86_64-unknown-linux-musl [arm64]=aarch64-unknown-linux-musl)
ARCHES=(amd64 arm64)

image_only=false
test_tools=false
for arg in "$@"; do
  case "$arg" in
    --image-only) image_only=true ;;
    --with-test-tools) test_tools=true ;;
    *) echo "unknown argument: $arg (see the comment at the top of $0)" >&2; exit 2 ;;
  esac
done

if $test_tools; then
  missing=()
  command -v skopeo >/dev/null || missing+=(skopeo)
  command -v umoci >/dev/null || missing+=(umoci)
  command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  if ((${#missing[@]})); then
    echo "== apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
fi

if ! $image_only; then
  if [[ ! -x "$VENV/bin/cargo-zigbuild" ]] \
    || [[ "$("$VENV/bin/cargo-zigbuild" --version)" != "cargo-zigbuild $CARGO_ZIGBUILD_VERSION" ]] \
    || [[ "$("$VENV/bin/python" -m ziglang version)" != "$ZIGLANG_VERSION" ]]; then
    echo "== installing cargo-zigbuild $CARGO_ZIGBUILD_VERSION and zig $ZIGLANG_VERSION (pip, $VENV)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION" "ziglang==$ZIGLANG_VERSION"
  fi
  # cargo-zigbuild finds zig as `python3 -m ziglang`: the venv's python3 must come first.
  export PATH="$VENV/bin:$PATH"
  for arch in "${ARCHES[@]}"; do
    t="${TARGETS[$arch]}"
    if ! rustup target list --installed | grep -qx "$t"; then
      echo "== rustup target add $t"
      rustup target add "$t"
    fi
  done
  # Paths of this machine (cargo and rustup homes, the target directory's generated
  # sources) end up in the panic locations the binary carries: map them to fixed ones, so the
  # binary does not depend on where it was built. The checkout needs no mapping (cargo names
  # the workspace's files by relative paths) and must not get one: flags naming the clone's
  # path would rebuild every dependency in each new clone. (aws-lc-sys maps its own C
  # sources' paths in release builds.)
  CARGO_HOME_DIR="${CARGO_HOME:-$HOME/.cargo}"
  RUSTUP_HOME_DIR="${RUSTUP_HOME:-$HOME/.rustup}"
  remap=(--remap-path-prefix="$CARGO_HOME_DIR=/cargo"
         --remap-path-prefix="$RUSTUP_HOME_DIR=/rustup" --remap-path-prefix="$CARGO_TARGET_DIR=/target")
  for arch in "${ARCHES[@]}"; do
    t="${TARGETS[$arch]}"
    # Encoded (0x1f separated) so a path with spaces stays one argument. With --target the
    # flags apply to the target's crates only, not to build scripts run on this host.
    CARGO_ENCODED_RUSTFLAGS="$(IFS=$'\x1f'; echo "${remap[*]}")"
    export CARGO_ENCODED_RUSTFLAGS
    echo "== cargo zigbuild --release -p bridge --target $t"
    start=$SECONDS
    cargo zigbuild --locked --release -p bridge --target "$t"
    echo "== $arch built in $((SECONDS - start)) s"
  done
  unset CARGO_ENCODED_RUSTFLAGS
fi

# The layer's CA bundle: kube's and the AWS SDK's rustls clients load their roots from the
# system (rustls-native-certs) as the bridge starts, and a scratch image has none. Debian's
# ca-certificates package's by default; its version goes into the image's history.
CA_BUNDLE="${STASHLESS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
if [[ ! -s "$CA_BUNDLE" ]]; then
  echo "no CA bundle at $CA_BUNDLE: install Debian's ca-certificates or set STASHLESS_CA_BUNDLE" >&2
  exit 1
fi
ca_origin="$CA_BUNDLE"
if [[ -z "${STASHLESS_CA_BUNDLE:-}" ]] && v="$(dpkg-query -W -f='${Version}' ca-certificates 2>/dev/null)"; then
  ca_origin="Debian ca-certificates $v"
fi

version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)"
revision="$(git rev-parse HEAD)"
# What the binary is built from differs from the commit: say so in the revision label.
if [[ -n "$(git status --porcelain --untracked-files=no -- Cargo.toml Cargo.lock functions)" ]]; then
  revision="$revision-dirty"
fi
# The commit's time, not the clock's, so a rebuild of the same commit is the same image.
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD)}"
source_url="${STASHLESS_IMAGE_SOURCE:-$(git remote get-url origin 2>/dev/null || true)}"

args=(--out "$OUT" --ca-bundle "$CA_BUNDLE" --ca-origin "$ca_origin" --version "$version"
      --revision "$revision" --epoch "$epoch" --source "$source_url")
for arch in "${ARCHES[@]}"; do
  args+=(--binary "$arch=$CARGO_TARGET_DIR/${TARGETS[$arch]}/release/bridge")
done
echo "== scripts/build-bridge-image.py"
python3 scripts/build-bridge-image.py "${args[@]}"
echo "Push every platform: skopeo copy --all --preserve-digests oci:${OUT#"$ROOT"/}:$version docker://<registry>/stashless-bridge:<tag>"
echo "(bridge_image_digest is the index digest above)"
