#!/usr/bin/env bash
# The test command: installs what the tests need (idempotent), then runs every test.
# Real OpenBao, Garage (S3), Prometheus Pushgateway; the Kubernetes API is the in-memory
# server first, then a real kube-apiserver (etcd + kube-apiserver 1.20, tests/kube/).
set -euo pipefail
cd "$(dirname "$0")/.."
export STASHLESS_CACHE="${STASHLESS_CACHE:-$HOME/.cache/stashless}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STASHLESS_CACHE/target}"
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
echo "== build the function binaries (dev profile, reused by the test passes)"
cargo build --locked -p backup -p restore
echo "== infra: Terraform formatting, parsing, validate, apply and destroy, consistency with the code, checkov"
bash tests/infra/run.sh
echo "== all tests (Kubernetes API: in-memory)"
cargo test --workspace --locked -- --test-threads="$threads"
echo "== benchmark smoke (bash scripts/bench.sh --smoke: end to end, tiny, no timing asserted)"
bash scripts/bench.sh --smoke >/dev/null
echo "== fuzz (bash scripts/fuzz.sh --seconds 45: snapshot verifier and event parsers, corpus kept in the cache)"
bash scripts/fuzz.sh --seconds 45
# The same end-to-end tests against a real kube-apiserver with Stash's CRDs (each test starts
# its own etcd + kube-apiserver), then the backup/restore ones with the CRDs stashless
# generates. Packages whose tests always use the in-memory server are not run again.
echo "== end-to-end tests (Kubernetes API: kube-apiserver 1.20, Stash's CRDs)"
# (The fault_ tests inject faults through the in-memory server and ran above.)
STASHLESS_KUBE_BACKEND=apiserver cargo test --locked -p stashless-tests -p stashless-cli \
    -p scheduler -p bridge -- --test-threads="$threads" --skip fault_
echo "== backup/restore tests (kube-apiserver 1.20, generated CRDs)"
STASHLESS_KUBE_BACKEND=apiserver STASHLESS_KUBE_CRDS=generated cargo test --locked \
    -p stashless-tests --test backup --test restore --test sweep --test retention \
    -- --test-threads="$threads"
echo "== leak scan: no secret in any log line or status/Event text of the whole run"
cargo run --locked -q -p stashless-tests --bin leak_scan -- "$STASHLESS_LEAK_DIR"
