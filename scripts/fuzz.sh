#!/usr/bin/env bash
# Fuzzes the snapshot verifier and the event parsers (cargo-fuzz, libFuzzer, ASan), each
# target for a bounded time. Fails on any crash and prints the crashing input's path.
#
#   bash scripts/fuzz.sh                 # 60 s per target
#   bash scripts/fuzz.sh --seconds 45    # CI (tests/run.sh)
#   bash scripts/fuzz.sh --seconds 600 archive_structured   # one target, longer
#
# The corpus is kept under $STASHLESS_CACHE/fuzz-corpus/<target> so it grows across runs
# (minimized when it passes $STASHLESS_FUZZ_MAX_CORPUS files, default 4000); the seeds
# (fuzz/seeds/, events/) are read, never written. Crash inputs are written to
# $STASHLESS_CACHE/fuzz-artifacts/<target>/; replay one with
#   cargo +nightly fuzz run --fuzz-dir fuzz --target-dir "$STASHLESS_CACHE/fuzz-target" <target> <file>
# Builds in their own target dir ($STASHLESS_CACHE/fuzz-target) with nightly (or, when
# nightly is missing, stable with RUSTC_BOOTSTRAP=1).
set -euo pipefail
cd "$(dirname "$0")/.."
export STASHLESS_CACHE="${STASHLESS_CACHE:-$HOME/.cache/stashless}"
seconds=60
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --seconds=*) seconds="${1#*=}"; shift ;;
        -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(archive_verifier archive_structured event_parsers)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
toolchain=(+nightly)
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    toolchain=()
    export RUSTC_BOOTSTRAP=1
fi
target_dir="$STASHLESS_CACHE/fuzz-target"
fuzz=(cargo "${toolchain[@]}" fuzz)
common=(--fuzz-dir fuzz --target-dir "$target_dir")

"${fuzz[@]}" build "${common[@]}"

# Seeds per target (read-only corpus directories) and extra libFuzzer flags.
seeds() {
    case "$1" in
        archive_verifier) echo fuzz/seeds/archive_verifier ;;
        event_parsers) echo events/backup events/restore events/scheduler ;;
        *) ;;
    esac
}
flags() {
    case "$1" in
        archive_verifier) echo -max_len=65536 ;;
        archive_structured) echo -max_len=16384 ;;
        event_parsers) echo -max_len=4096 -dict=fuzz/dicts/event_parsers.dict ;;
    esac
}

failed=0
for t in "${targets[@]}"; do
    corpus="$STASHLESS_CACHE/fuzz-corpus/$t"
    artifacts="$STASHLESS_CACHE/fuzz-artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    log="$artifacts/last-run.log"
    # libFuzzer keeps every input that was new when found; past a few thousand files the
    # start-up pass over them eats the time box, so shrink to a covering subset first.
    if [ "$(find "$corpus" -type f | wc -l)" -gt "${STASHLESS_FUZZ_MAX_CORPUS:-4000}" ]; then
        echo "-- $t: minimizing the corpus ($(find "$corpus" -type f | wc -l) files)"
        # shellcheck disable=SC2046
        "${fuzz[@]}" cmin "${common[@]}" "$t" "$corpus" -- $(flags "$t") >"$log" 2>&1 ||
            { echo "FAILED: minimizing the $t corpus (log: $log)"; tail -20 "$log"; exit 1; }
    fi
    echo "-- $t: ${seconds}s, corpus $corpus ($(find "$corpus" -type f | wc -l) inputs)"
    # shellcheck disable=SC2046
    if "${fuzz[@]}" run "${common[@]}" "$t" "$corpus" $(seeds "$t") -- \
        -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" $(flags "$t") >"$log" 2>&1; then
        # libFuzzer's last status line: coverage (cov: edges, ft: features), the corpus it
        # keeps in memory, executions per second, peak RSS.
        grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tr -s '\t ' ' ' | sed 's/^/   /' || true
        echo "   corpus dir now $(find "$corpus" -type f | wc -l) files"
    else
        failed=1
        echo "FAILED: $t (log: $log)"
        grep -E -A12 'panicked at|ERROR: (libFuzzer|AddressSanitizer)' "$log" | head -40 | sed 's/^/   /' || true
        crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        if [ -n "$crash" ]; then
            echo "   crash input: $crash"
            echo "   replay: ${fuzz[*]} run ${common[*]} $t $crash"
        else
            tail -20 "$log" | sed 's/^/   /'
        fi
    fi
done
exit "$failed"
