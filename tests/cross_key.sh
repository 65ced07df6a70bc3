#!/usr/bin/env bash
# What a release cross build is built from, as a short key: the committed trees of the
# workspace and of the given build scripts, and rustc's version. Prints nothing when there is
# no commit or those paths have uncommitted changes (then nothing is reused).
#
#   bash tests/cross_key.sh scripts/build-lambdas.sh
#   bash tests/cross_key.sh scripts/build-bridge-image.sh scripts/build-bridge-image.py
#
# tests/run.sh keeps each cross build's output with the key it was built from: cargo would
# rebuild the workspace's own crates in every fresh clone (their files are newer than its
# records), and a release cross build of them takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
from=(functions Cargo.toml Cargo.lock "$@")
git rev-parse -q --verify HEAD >/dev/null 2>&1 || exit 0
[ -z "$(git status --porcelain -- "${from[@]}")" ] || exit 0
{ for f in "${from[@]}"; do git rev-parse "HEAD:$f"; done; rustc -V; } | sha256sum | cut -c1-16
