#!/usr/bin/env bash
# The test command: installs what the tests need (idempotent), then runs every test.
# Real OpenBao, Garage (S3), Prometheus Pushgateway; the Kubernetes API is the in-memory
# server first, then a real kube-apiserver (etcd + kube-apiserver 1.20, tests/kube/).
set -euo pipefail
cd "$(dirname "$0")/.."
export STASHLESS_CACHE="${STASHLESS_CACHE:-$HOME/.cache/stashless}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STASHLESS_CACHE/target}"
# Each step's start, with the minutes since the run began (CI's time budget is read off these).
began=$SECONDS
step() { printf '== [%d:%02d] %s\n' $(((SECONDS - began) / 60)) $(((SECONDS - began) % 60)) "$*"; }
bash tests/setup.sh
# shellcheck disable=SC1091
[ -f "$STASHLESS_CACHE/env.sh" ] && . "$STASHLESS_CACHE/env.sh"
# Each end-to-end test starts its own OpenBao; four at a time suits a 2-core machine.
threads="${STASHLESS_TEST_THREADS:-4}"
# Every test process writes its log lines, status/Event texts and the secrets it made here;
# the leak scan at the end reads them (tests/src/leaks.rs).
STASHLESS_LEAK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/stashless-leaks.XXXXXX")"
export STASHLESS_LEAK_DIR
# The apply test runs the backup and restore binaries against what Terraform applied.
step "build the function binaries (dev profile, reused by the test passes)"
# One package at a time, as `cargo lambda watch` builds them (`cargo run --bin <function>`), so
# its builds later find these artefacts (features are resolved per selection).
for function in backup restore scheduler; do cargo build --locked -p "$function"; done
# The arm64 Lambda packages as users deploy them, in a target directory of their own (a
# release cross build: cached, and never waiting on the test builds' lock).
# Both release cross builds are kept with the key of what they were built from
# (tests/cross_key.sh): a fresh clone of the same code reuses them instead of rebuilding.
key=$(bash tests/cross_key.sh scripts/build-lambdas.sh)
export STASHLESS_LAMBDA_ARM64_DIR="$STASHLESS_CACHE/lambda-arm64"
if [ -n "$key" ] && [ "$(cat "$STASHLESS_LAMBDA_ARM64_DIR/.built-from" 2>/dev/null)" = "$key" ]; then
    step "arm64 Lambda packages: kept in $STASHLESS_LAMBDA_ARM64_DIR, built from these sources ($key)"
else
    step "arm64 Lambda packages (scripts/build-lambdas.sh into $STASHLESS_LAMBDA_ARM64_DIR)"
    rm -f "$STASHLESS_LAMBDA_ARM64_DIR/.built-from"
    CARGO_TARGET_DIR="$STASHLESS_CACHE/target-cross" STASHLESS_LAMBDA_DIR="$STASHLESS_LAMBDA_ARM64_DIR" \
        bash scripts/build-lambdas.sh
    [ -z "$key" ] || echo "$key" >"$STASHLESS_LAMBDA_ARM64_DIR/.built-from"
fi
# The bridge's OCI image (static musl binaries for amd64 and arm64, target-cross as well);
# the image itself is always written again (seconds), from kept binaries when the key matches.
export STASHLESS_BRIDGE_IMAGE="$PWD/target/image/stashless-bridge"
key=$(bash tests/cross_key.sh scripts/build-bridge-image.sh scripts/build-bridge-image.py)
if [ -n "$key" ] && [ "$(cat "$STASHLESS_CACHE/target-cross/bridge.built-from" 2>/dev/null)" = "$key" ]; then
    step "bridge OCI image from the bridge binaries built from these sources ($key)"
    bash scripts/build-bridge-image.sh --image-only
else
    step "bridge OCI image (scripts/build-bridge-image.sh into $STASHLESS_BRIDGE_IMAGE)"
    rm -f "$STASHLESS_CACHE/target-cross/bridge.built-from"
    bash scripts/build-bridge-image.sh
    [ -z "$key" ] || echo "$key" >"$STASHLESS_CACHE/target-cross/bridge.built-from"
fi
step "infra: Terraform formatting, parsing, validate, apply and destroy, consistency with the code, checkov"
bash tests/infra/run.sh
# With the artefact tests: the bridge image (tests/tests/bridge_image.rs, STASHLESS_BRIDGE_IMAGE)
# and the arm64 packages under qemu's user mode (tests/tests/lambda_arm64.rs,
# STASHLESS_LAMBDA_ARM64_DIR), both exported above.
step "all tests (Kubernetes API: in-memory)"
cargo test --workspace --locked -- --test-threads="$threads"
step "benchmark smoke (bash scripts/bench.sh --smoke: end to end, tiny, no timing asserted)"
bash scripts/bench.sh --smoke >/dev/null
step "fuzz (bash scripts/fuzz.sh --seconds 45: snapshot verifier and event parsers, corpus kept in the cache)"
bash scripts/fuzz.sh --seconds 45
# The same end-to-end tests against a real kube-apiserver with Stash's CRDs (each test starts
# its own etcd + kube-apiserver), then the backup/restore ones with the CRDs stashless
# generates. Packages whose tests always use the in-memory server are not run again.
step "end-to-end tests (Kubernetes API: kube-apiserver 1.20, Stash's CRDs)"
# (The fault_ tests inject faults through the in-memory server and ran above. So did the
# artefact tests, which do not depend on the backend: tests/tests/bridge_image.rs and
# tests/tests/lambda_arm64.rs, skipped by their full names; --skip matches substrings, and no
# other test name in these packages contains any of them.)
artefact_tests=(
    index_configs_and_layers_read_back_as_built
    rebuilt_from_its_own_contents_the_image_is_byte_identical
    amd64_binary_from_the_image_serves_as_the_bridge
    arm64_binary_from_the_image_serves_as_the_bridge_under_qemu
    pushed_with_skopeo_the_image_keeps_its_index_digest
    arm64_packages_under_emulation
    arm64_backup_and_restore_packages_round_trip_a_secret
)
skip_artefacts=()
for t in "${artefact_tests[@]}"; do skip_artefacts+=(--skip "$t"); done
STASHLESS_KUBE_BACKEND=apiserver cargo test --locked -p stashless-tests -p stashless-cli \
    -p scheduler -p bridge -- --test-threads="$threads" --skip fault_ "${skip_artefacts[@]}"
step "backup/restore tests (kube-apiserver 1.20, generated CRDs)"
STASHLESS_KUBE_BACKEND=apiserver STASHLESS_KUBE_CRDS=generated cargo test --locked \
    -p stashless-tests --test backup --test restore --test sweep --test retention \
    -- --test-threads="$threads"
# A program, not a test: the build `cargo lambda watch` starts would wait on the lock cargo test
# holds (tests/src/bin/cargo_lambda_watch.rs).
step "the functions under cargo lambda watch: cargo lambda invoke of every events/ sample, a backup and a restore"
cargo run --locked -q -p stashless-tests --bin cargo_lambda_watch
step "leak scan: no secret in any log line or status/Event text of the whole run"
cargo run --locked -q -p stashless-tests --bin leak_scan -- "$STASHLESS_LEAK_DIR"
step "done"
