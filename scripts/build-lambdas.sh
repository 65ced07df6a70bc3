#!/usr/bin/env bash
# Build the Lambda deployment packages the Terraform module deploys:
#
#   target/lambda/scheduler/bootstrap.zip
#   target/lambda/backup/bootstrap.zip
#   target/lambda/restore/bootstrap.zip
#
# with `cargo lambda build --release --arm64 --output-format zip` (Graviton, the module's
# default `architecture`). cargo-lambda cross-compiles with zig; both come from PyPI
# (`pip install cargo-lambda ziglang`) and are installed here when missing (or
# `cargo install cargo-lambda` where pip is not available; zig must then be on PATH).
#
#   bash scripts/build-lambdas.sh              # arm64 zips into target/lambda
#   STASHLESS_LAMBDA_ARCH=x86_64 bash scripts/build-lambdas.sh   # set architecture = "x86_64" too
#   STASHLESS_LAMBDA_DIR=/some/dir bash scripts/build-lambdas.sh  # set lambda_zip_dir too
#   bash scripts/build-lambdas.sh --dry-run    # print the build command only
#
# The zips land in target/lambda of this repository even when CARGO_TARGET_DIR points
# elsewhere (--lambda-dir), which is where the module looks by default. The test command runs
# it too (tests/run.sh: CARGO_TARGET_DIR and STASHLESS_LAMBDA_DIR under ~/.cache/stashless,
# cargo-lambda and zig pinned by tests/setup.sh), then runs each arm64 `bootstrap` under qemu
# (tests/tests/lambda_arm64.rs). The first release cross build takes 15-25 minutes on 2 cores
# and needs the aarch64 standard library (rustup target add aarch64-unknown-linux-gnu).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ARCH="${STASHLESS_LAMBDA_ARCH:-arm64}"
OUT="${STASHLESS_LAMBDA_DIR:-$ROOT/target/lambda}"
# The crates that run on lambda_runtime (tests/infra checks this list against functions/).
FUNCTIONS=(scheduler backup restore)

case "$ARCH" in
  arm64) ARCH_FLAG=--arm64 TARGET=aarch64-unknown-linux-gnu ;;
  x86_64) ARCH_FLAG=--x86-64 TARGET=x86_64-unknown-linux-gnu ;;
  *) echo "STASHLESS_LAMBDA_ARCH must be arm64 or x86_64, not $ARCH" >&2; exit 2 ;;
esac

cmd=(cargo lambda build --release "$ARCH_FLAG" --output-format zip --lambda-dir "$OUT")
for f in "${FUNCTIONS[@]}"; do cmd+=(-p "$f"); done

if [[ "${1:-}" == "--dry-run" ]]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi

if ! cargo lambda --version >/dev/null 2>&1; then
  if command -v pip3 >/dev/null || command -v pip >/dev/null; then
    echo "== installing cargo-lambda and zig (pip)"
    "$(command -v pip3 || command -v pip)" install --quiet cargo-lambda ziglang
    # pip's script directory may not be on PATH (user installs).
    PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
    PATH="$PATH:$(python3 -m site --user-base 2>/dev/null)/bin"
    export PATH
  else
    echo "== installing cargo-lambda (cargo install; zig must be on PATH)"
    cargo install --locked cargo-lambda
  fi
fi
if ! command -v zig >/dev/null && ! python3 -c 'import ziglang' 2>/dev/null; then
  echo "== installing zig (pip install ziglang)"
  "$(command -v pip3 || command -v pip)" install --quiet ziglang
fi
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$TARGET"; then
  echo "== rustup target add $TARGET"
  rustup target add "$TARGET"
fi

echo "== ${cmd[*]}"
"${cmd[@]}"

echo
echo "Lambda packages ($ARCH):"
for f in "${FUNCTIONS[@]}"; do
  zip="$OUT/$f/bootstrap.zip"
  if [[ ! -f "$zip" ]]; then
    echo "missing: $zip" >&2
    exit 1
  fi
  printf '  %-10s %s (%s bytes)\n' "$f" "${zip#"$ROOT"/}" "$(stat -c %s "$zip")"
done
if [[ "$OUT" != "$ROOT/target/lambda" ]]; then
  echo "Set lambda_zip_dir = \"$OUT\" in the module."
fi
if [[ "$ARCH" != arm64 ]]; then
  echo "Set architecture = \"$ARCH\" in the module."
fi
