#!/usr/bin/env bash
# Benchmarks: stashless beside the raw snapshot rate, the Stash path (bao snapshot save +
# restic) and a by-hand upload (rclone), plus restores, start-up and the scheduler tick.
# Writes the generated section of docs/benchmarks.md.
#
#   bash scripts/bench.sh                 # sizes 64, 256, 1024 MiB, 3 runs each (~15 min
#                                         # the first run also seeds and caches OpenBao data)
#   bash scripts/bench.sh --smoke         # tiny, debug build, report to a temp file (CI)
#   bash scripts/bench.sh --sizes 64 --runs 5   # any bench option (--help lists them)
set -euo pipefail
cd "$(dirname "$0")/.."
export STASHLESS_CACHE="${STASHLESS_CACHE:-$HOME/.cache/stashless}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STASHLESS_CACHE/target}"
bash tests/setup.sh
# shellcheck disable=SC1091
[ -f "$STASHLESS_CACHE/env.sh" ] && . "$STASHLESS_CACHE/env.sh"

packages=(-p backup -p restore -p scheduler -p stashless-tests --bin bench)
if [ "${1:-}" = "--smoke" ]; then
    shift
    # The debug build the tests already made: checks the benchmark end to end, times nothing.
    cargo build --locked "${packages[@]}"
    exec "$CARGO_TARGET_DIR/debug/bench" --sizes 4 --runs 1 --startup-runs 3 --configs 50 \
        --sessions 500 --ticks 1 --out "${TMPDIR:-/tmp}/stashless-bench-smoke.md" \
        --command "bash scripts/bench.sh --smoke" "$@"
fi
cargo build --locked --release "${packages[@]}"
cmd="bash scripts/bench.sh${*:+ $*}"
exec "$CARGO_TARGET_DIR/release/bench" --command "$cmd" "$@"
