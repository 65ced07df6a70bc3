#!/usr/bin/env bash
# Builds a real kube-apiserver and kube-controller-manager (Kubernetes 1.20.2, Debian
# bookworm's `kubernetes` source package) once and caches them under $STASHLESS_CACHE/kube.
# The controller manager runs only beside `terraform apply` (tests/infra/apply): the
# kubernetes provider waits for the token controller's ServiceAccount Secret on 1.20 and for
# the namespace controller to finalize a deleted namespace. Installs Go 1.19 and etcd 3.4
# from Debian. Idempotent: a cached binary that answers --version is kept.
#
# Why the source package: no API server binary is packaged for Debian, and the machine
# reaches no registry but Debian's, PyPI's, npm's and crates.io.
#
# Known obstacles, handled below:
# - the tarball lacks pkg/generated/openapi/zz_generated.openapi.go: generated with the
#   vendored openapi-gen over the same package list Kubernetes' Makefile uses;
# - the vendored modern-go/reflect2 1.0.1 crashes on Go >= 1.18: replaced by Debian's
#   reflect2 and json-iterator (golang-github-modern-go-reflect2-dev and
#   golang-github-json-iterator-go-dev);
# - the vendored OpenAPI validators treat a value as null when
#   reflect.DeepEqual(reflect.Zero(T), reflect.ValueOf(v)) holds. Built with Go >= 1.19 that
#   is true for the empty string (both Values point at the runtime's shared zero buffer),
#   so every CR with a "" field is rejected ("must be of type string: null") and Stash's
#   AppBinding CRD (`default: ""`) too. Released 1.20 binaries, built with Go 1.15, accept
#   them; the check is reduced to `data == nil`, which is what it meant for decoded JSON.
# The deb-src entries come from a private apt configuration derived from the machine's
# own sources list, so no registry host is written into the repository.
set -euo pipefail

CACHE="${STASHLESS_CACHE:-$HOME/.cache/stashless}/kube"
VERSION_WANTED="v1.20.2"

log() { echo "[kube/build] $*" >&2; }

# Bumped whenever the recipe below changes, so a binary built by an older one is rebuilt.
RECIPE=2
# Each binary is rebuilt only when missing, of another version or of an older recipe.
wanted=""
for cmd in kube-apiserver kube-controller-manager; do
    bin="$CACHE/bin/$cmd"
    if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$VERSION_WANTED" \
        && [ "$(cat "$bin.recipe" 2>/dev/null)" = "$RECIPE" ]; then
        log "cached: $bin"
    else
        wanted="$wanted $cmd"
    fi
done
[ -n "$wanted" ] || exit 0

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
PKGS="golang-go etcd-server golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev dpkg-dev openssl"
missing=""
for p in $PKGS; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    log "apt-get install$missing"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq $missing >/dev/null
fi

mkdir -p "$CACHE/bin"
WORK="$CACHE/build"
rm -rf "$WORK"
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/sources.list.d" "$WORK/dl"

# A private apt configuration: the machine's own sources, as deb-src.
found=0
for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    sed 's/^Types:.*$/Types: deb-src/' "$f" >"$WORK/apt/sources.list.d/$(basename "$f")"
    found=1
done
if [ -f /etc/apt/sources.list ]; then
    grep -E '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' >"$WORK/apt/sources.list.d/main.list" || true
    [ -s "$WORK/apt/sources.list.d/main.list" ] && found=1
fi
[ "$found" = 1 ] || { log "no apt sources found on this machine"; exit 1; }
APT_OPTS=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$WORK/apt/sources.list.d"
    -o "Dir::State::Lists=$WORK/apt/lists" -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root)
log "fetching the kubernetes source package"
apt-get "${APT_OPTS[@]}" update -qq
(cd "$WORK/dl" && apt-get "${APT_OPTS[@]}" source --download-only kubernetes >/dev/null)
dsc=$(ls "$WORK"/dl/kubernetes_*.dsc | head -1)
dpkg-source -x --no-check "$dsc" "$WORK/src" >/dev/null
SRC="$WORK/src"
grep -q '1.20.2' "$SRC/debian/changelog" || log "warning: source is not 1.20.2: $(head -1 "$SRC/debian/changelog")"

# Debian's Go 1.19, as Debian's own rules build it, whatever `go` comes first on PATH (polyglot
# machines put Go 1.26 there; 1.20's vendored tree was built and checked with 1.19 only).
DEBIAN_GOROOT=/usr/lib/go-1.19
[ -x "$DEBIAN_GOROOT/bin/go" ] || { log "Debian's Go 1.19 is not at $DEBIAN_GOROOT (golang-go installed?)"; exit 1; }
export PATH="$DEBIAN_GOROOT/bin:$PATH" GOROOT="$DEBIAN_GOROOT" GOTOOLCHAIN=local
go version | grep -q 'go1\.19' || { log "expected Go 1.19, got: $(go version)"; exit 1; }
log "building with $(go version)"

# GOPATH mode, as Debian's own rules build it.
export GOPATH="$WORK/gopath"
export GO111MODULE=off GOFLAGS= GOPROXY=off CGO_ENABLED=0 GOCACHE="$CACHE/gocache"
mkdir -p "$GOPATH/src/k8s.io"
ln -s "$SRC" "$GOPATH/src/k8s.io/kubernetes"
PKG=k8s.io/kubernetes

log "replacing vendored reflect2 and json-iterator with Debian's (Go >= 1.18 fix)"
for dep in github.com/modern-go/reflect2 github.com/json-iterator/go; do
    rm -rf "$SRC/vendor/$dep"
    cp -r "/usr/share/gocode/src/$dep" "$SRC/vendor/$dep"
done

for f in vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go vendor/github.com/go-openapi/validate/type.go; do
    grep -q 'data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data))' "$SRC/$f" \
        || { log "expected zero-value check not found in $f"; exit 1; }
    sed -i 's/data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data))/data == nil/' "$SRC/$f"
done

cd "$GOPATH/src/$PKG"
log "building openapi-gen"
go build -o "$WORK/openapi-gen" "$PKG/vendor/k8s.io/kube-openapi/cmd/openapi-gen"

# The package list of Makefile.generated_files (KUBE target): every directory holding a
# Go file tagged '+k8s:openapi-gen=', minus code-generator and sample-apiserver.
dirs=$(find -H . -not \( \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune \) \
        -type f -name '*.go' -print0 \
    | xargs -0 grep -l '^// *+k8s:' | xargs grep -l '+k8s:openapi-gen=' \
    | sed -e 's|^\./||' -e 's|^staging/src|vendor|' | xargs -n1 dirname \
    | grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' \
    | LC_ALL=C sort -u | sed "s|^|$PKG/|" | paste -sd, -)
log "generating OpenAPI definitions ($(echo "$dirs" | tr ',' '\n' | wc -l) packages)"
"$WORK/openapi-gen" --logtostderr -i "$dirs" -p "$PKG/pkg/generated/openapi" \
    -O zz_generated.openapi -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
    -r "$WORK/openapi-violations.report" >"$WORK/openapi-gen.log" 2>&1
test -s pkg/generated/openapi/zz_generated.openapi.go

ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$VERSION_WANTED -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=20 -X k8s.io/client-go/pkg/version.gitVersion=$VERSION_WANTED"
ldflags="$ldflags -X $PKG/vendor/k8s.io/component-base/version.gitVersion=$VERSION_WANTED -X $PKG/vendor/k8s.io/component-base/version.gitMajor=1 -X $PKG/vendor/k8s.io/component-base/version.gitMinor=20"
for cmd in $wanted; do
    bin="$CACHE/bin/$cmd"
    log "building $cmd (several minutes on 2 cores)"
    go build -ldflags "$ldflags" -o "$bin.tmp" "$PKG/cmd/$cmd"
    mv "$bin.tmp" "$bin"
    echo "$RECIPE" >"$bin.recipe"
    "$bin" --version
    log "built $bin"
done
# The source tree is large; the Go build cache stays for a quick rebuild.
rm -rf "$WORK"
