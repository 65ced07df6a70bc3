#!/usr/bin/env bash
# The test command: installs what the tests need (idempotent), then runs every test.
# Real OpenBao, Garage (S3), Prometheus Pushgateway; the Kubernetes API is in-memory.
set -euo pipefail
cd "$(dirname "$0")/.."
export STASHLESS_CACHE="${STASHLESS_CACHE:-$HOME/.cache/stashless}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STASHLESS_CACHE/target}"
bash tests/setup.sh
# shellcheck disable=SC1091
[ -f "$STASHLESS_CACHE/env.sh" ] && . "$STASHLESS_CACHE/env.sh"
# Each end-to-end test starts its own OpenBao; four at a time suits a 2-core machine.
cargo test --workspace --locked -- --test-threads="${STASHLESS_TEST_THREADS:-4}"
