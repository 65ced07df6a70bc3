#!/usr/bin/env bash
# A real Kubernetes API server on loopback: etcd 3.4 + kube-apiserver 1.20 (built once by
# tests/kube/build.sh), TLS with a generated CA, a static bearer token, RBAC on.
#
#   apiserver.sh up   DIR [stash|generated]   start both in the background, install the CRDs,
#                                             print the environment to use it; DIR is created
#   apiserver.sh down DIR                     stop both, remove DIR
#
# The test harness (tests/src/procs/apiserver.rs) uses the steps separately, so that it
# owns the two processes and they die with the test process:
#
#   apiserver.sh prepare DIR ETCD_PORT PEER_PORT API_PORT
#       certificates, token file, kubeconfig; DIR/etcd.args and DIR/kube-apiserver.args
#       hold one argument per line; DIR/env holds STASHLESS_KUBE_URL/TOKEN/CA_FILE;
#       etcd's data goes to $STASHLESS_ETCD_DATA if set, else to tmpfs or DIR
#   apiserver.sh install-crds DIR stash|generated
#       create the six CRDs from infra/crds/<set>/ and wait until they are served
#
# Tokens (DIR/tokens.csv): `admin` (group system:masters) and `limited` (no groups:
# RBAC allows it only discovery), for tests of what a function without rights sees.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${STASHLESS_CACHE:-$HOME/.cache/stashless}"
APISERVER="${STASHLESS_KUBE_APISERVER:-$CACHE/kube/bin/kube-apiserver}"
ETCD="${STASHLESS_ETCD:-$(command -v etcd || echo /usr/bin/etcd)}"

die() { echo "[kube/apiserver] $*" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

prepare() {
    local dir=$1 etcd_port=$2 peer_port=$3 api_port=$4
    mkdir -p "$dir/pki"
    local pki="$dir/pki"
    # ECDSA P-256 keys: fast to generate, accepted by kube-apiserver and rustls.
    openssl ecparam -name prime256v1 -genkey -noout -out "$pki/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$pki/ca.key" -out "$pki/ca.crt" -days 7 \
        -subj "/CN=stashless-test-ca" 2>/dev/null
    openssl ecparam -name prime256v1 -genkey -noout -out "$pki/apiserver.key" 2>/dev/null
    openssl req -new -key "$pki/apiserver.key" -out "$pki/apiserver.csr" -subj "/CN=kube-apiserver" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n' >"$pki/ext"
    openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
        -CAcreateserial -out "$pki/apiserver.crt" -days 7 -extfile "$pki/ext" 2>/dev/null
    openssl ecparam -name prime256v1 -genkey -noout -out "$pki/sa.key" 2>/dev/null
    openssl ec -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null

    local admin limited
    admin=$(openssl rand -hex 24)
    limited=$(openssl rand -hex 24)
    printf '%s,admin,admin,"system:masters"\n%s,limited,limited\n' "$admin" "$limited" >"$dir/tokens.csv"
    chmod 600 "$dir/tokens.csv"

    # etcd's data on tmpfs when there is one: fsync on a VM disk dominates write latency.
    local data="${STASHLESS_ETCD_DATA:-$dir/etcd-data}"
    if [ -z "${STASHLESS_ETCD_DATA:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
        data="/dev/shm/stashless-etcd-$(basename "$dir")-$$"
        ln -sfn "$data" "$dir/etcd-data"
    fi
    cat >"$dir/etcd.args" <<EOF
--name=default
--data-dir=$data
--listen-client-urls=http://127.0.0.1:$etcd_port
--advertise-client-urls=http://127.0.0.1:$etcd_port
--listen-peer-urls=http://127.0.0.1:$peer_port
--initial-advertise-peer-urls=http://127.0.0.1:$peer_port
--initial-cluster=default=http://127.0.0.1:$peer_port
--auto-compaction-retention=0
--logger=zap
--log-level=warn
EOF
    # No automatic compaction (the conformance suite compacts on purpose); no insecure
    # port (1.20 still opens 8080 by default, which parallel servers would fight over).
    cat >"$dir/kube-apiserver.args" <<EOF
--etcd-servers=http://127.0.0.1:$etcd_port
--etcd-compaction-interval=0
--bind-address=127.0.0.1
--advertise-address=127.0.0.1
--secure-port=$api_port
--insecure-port=0
--tls-cert-file=$pki/apiserver.crt
--tls-private-key-file=$pki/apiserver.key
--client-ca-file=$pki/ca.crt
--token-auth-file=$dir/tokens.csv
--authorization-mode=RBAC
--service-account-key-file=$pki/sa.pub
--service-account-signing-key-file=$pki/sa.key
--service-account-issuer=https://kubernetes.default.svc
--service-cluster-ip-range=10.96.0.0/24
--endpoint-reconciler-type=none
--enable-priority-and-fairness=false
--profiling=false
--cert-dir=$dir/certs
--logtostderr=true
--v=1
EOF
    cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $pki/ca.crt
users:
- name: admin
  user:
    token: $admin
contexts:
- name: local
  context: {cluster: local, user: admin}
current-context: local
EOF
    cat >"$dir/env" <<EOF
STASHLESS_KUBE_URL=https://127.0.0.1:$api_port
STASHLESS_KUBE_TOKEN=$admin
STASHLESS_KUBE_CA_FILE=$pki/ca.crt
STASHLESS_KUBE_LIMITED_TOKEN=$limited
ETCD_URL=http://127.0.0.1:$etcd_port
EOF
    chmod 600 "$dir/env" "$dir/kubeconfig"
}

# curl against the API server as admin.
kcurl() {
    local dir=$1
    shift
    # shellcheck disable=SC1091
    . "$dir/env"
    curl -sS --cacert "$STASHLESS_KUBE_CA_FILE" -H "Authorization: Bearer $STASHLESS_KUBE_TOKEN" "$@"
}

wait_ready() {
    local dir=$1 deadline=$((SECONDS + ${2:-90}))
    # shellcheck disable=SC1091
    . "$dir/env"
    until [ "$(kcurl "$dir" -o /dev/null -w '%{http_code}' "$STASHLESS_KUBE_URL/readyz" 2>/dev/null)" = 200 ]; do
        [ $SECONDS -lt "$deadline" ] || die "kube-apiserver not ready after ${2:-90}s; log: $dir/kube-apiserver.log"
        sleep 0.2
    done
}

install_crds() {
    local dir=$1 set=${2:-stash}
    local src="$ROOT/infra/crds/$set"
    [ -d "$src" ] || die "no CRD set '$set' (want stash or generated): $src"
    # shellcheck disable=SC1091
    . "$dir/env"
    local f plural group version json
    for f in "$src"/*.yaml; do
        json=$(python3 -c 'import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))' "$f")
        local code
        code=$(printf '%s' "$json" | kcurl "$dir" -o "$dir/crd-create.out" -w '%{http_code}' -X POST \
            -H 'Content-Type: application/json' --data-binary @- \
            "$STASHLESS_KUBE_URL/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
        [ "$code" = 201 ] || [ "$code" = 409 ] || die "creating the CRD from $f: HTTP $code: $(cat "$dir/crd-create.out")"
    done
    # Served means: discovery of group/version lists the plural (Established alone races it).
    for f in "$src"/*.yaml; do
        read -r group plural version < <(python3 -c '
import sys,yaml
d=yaml.safe_load(open(sys.argv[1]))["spec"]
print(d["group"], d["names"]["plural"], [v["name"] for v in d["versions"] if v.get("storage")][0])' "$f")
        local deadline=$((SECONDS + 60))
        until kcurl "$dir" "$STASHLESS_KUBE_URL/apis/$group/$version" 2>/dev/null | grep -q "\"name\": *\"$plural\""; do
            [ $SECONDS -lt "$deadline" ] || die "CRD $plural.$group not served after 60s"
            sleep 0.1
        done
    done
}

up() {
    local dir=$1 set=${2:-stash}
    [ -x "$APISERVER" ] || bash "$HERE/build.sh"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    prepare "$dir" "$(free_port)" "$(free_port)" "$(free_port)"
    mapfile -t etcd_args <"$dir/etcd.args"
    mapfile -t api_args <"$dir/kube-apiserver.args"
    nohup "$ETCD" "${etcd_args[@]}" >"$dir/etcd.log" 2>&1 &
    echo $! >"$dir/etcd.pid"
    nohup "$APISERVER" "${api_args[@]}" >"$dir/kube-apiserver.log" 2>&1 &
    echo $! >"$dir/kube-apiserver.pid"
    wait_ready "$dir"
    install_crds "$dir" "$set"
    echo "# kube-apiserver is up; to use it:"
    sed 's/^/export /' "$dir/env"
    echo "export KUBECONFIG=$dir/kubeconfig"
}

down() {
    local dir=$1 p
    for p in kube-apiserver etcd; do
        if [ -f "$dir/$p.pid" ]; then
            kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
        fi
    done
    sleep 0.5
    for p in kube-apiserver etcd; do
        [ -f "$dir/$p.pid" ] && kill -9 "$(cat "$dir/$p.pid")" 2>/dev/null || true
    done
    [ -L "$dir/etcd-data" ] && rm -rf "$(readlink "$dir/etcd-data")"
    rm -rf "$dir"
}

cmd=${1:-}
shift || true
case "$cmd" in
prepare) [ $# -eq 4 ] || die "usage: apiserver.sh prepare DIR ETCD_PORT PEER_PORT API_PORT"; prepare "$@" ;;
install-crds) [ $# -ge 1 ] || die "usage: apiserver.sh install-crds DIR [stash|generated]"; install_crds "$@" ;;
wait-ready) wait_ready "$@" ;;
up) [ $# -ge 1 ] || die "usage: apiserver.sh up DIR [stash|generated]"; up "$@" ;;
down) [ $# -eq 1 ] || die "usage: apiserver.sh down DIR"; down "$@" ;;
*) die "usage: apiserver.sh up|down|prepare|install-crds ... (see the comment at the top)" ;;
esac
