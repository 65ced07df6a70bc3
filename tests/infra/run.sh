#!/usr/bin/env bash
# Static checks of the deployment (infra/): formatting (hclfmt, the formatter `terraform fmt`
# is built on), parsing (python-hcl2), consistency with the Rust functions (pytest), docs in
# sync, and checkov over every framework with files there. Idempotent: installs what it
# needs once, into ${STASHLESS_CACHE:-~/.cache/stashless}, and reuses it. Exits non-zero on
# any failure.
#
#   bash tests/infra/run.sh            # check
#   bash tests/infra/run.sh --fix      # format every .tf and regenerate infra/README.md tables
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CACHE="${STASHLESS_CACHE:-$HOME/.cache/stashless}"
FIX=0
[[ "${1:-}" == "--fix" ]] && FIX=1

# Pinned tool versions (reproducible results).
CHECKOV_VERSION=3.3.30
HCL2_VERSION=8.1.4
PYTEST_VERSION=9.2.0
PYYAML_VERSION=6.0.3
BOTO3_VERSION=1.44.8

log() { printf '== %s\n' "$*"; }

# venv NAME "pkg==v ..." : a venv under the cache with exactly these pins (checkov and
# python-hcl2 both ship a module named `hcl2`, so they get one venv each).
venv() {
  local dir="$CACHE/infra/venv-$1" pins="$2"
  if [[ ! -f "$dir/.pins" || "$(cat "$dir/.pins")" != "$pins" ]]; then
    log "installing $pins into $dir" >&2
    rm -rf "$dir"
    python3 -m venv "$dir"
    # shellcheck disable=SC2086
    "$dir/bin/pip" install --quiet --disable-pip-version-check $pins >&2
    printf '%s' "$pins" >"$dir/.pins"
  fi
  echo "$dir"
}

# hclfmt from Debian's golang-github-hashicorp-hcl-v2-dev, built in GOPATH mode with
# Debian's Go (no module proxy involved). Cached per package version.
hclfmt_bin() {
  local src=/usr/share/gocode/src/github.com/hashicorp/hcl/v2/cmd/hclfmt
  if [[ ! -d "$src" ]] || ! command -v go >/dev/null; then
    log "installing golang-github-hashicorp-hcl-v2-dev (apt)" >&2
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q golang-go golang-github-hashicorp-hcl-v2-dev >&2; then
      apt-get update -q >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q golang-go golang-github-hashicorp-hcl-v2-dev >&2
    fi
  fi
  local ver
  ver=$(dpkg-query -W -f='${Version}' golang-github-hashicorp-hcl-v2-dev)
  local out="$CACHE/hclfmt/$ver/hclfmt"
  if [[ ! -x "$out" ]]; then
    log "building hclfmt $ver" >&2
    mkdir -p "$CACHE/hclfmt/$ver"
    GO111MODULE=off GOPATH="$CACHE/hclfmt/gopath:/usr/share/gocode" CGO_ENABLED=0 \
      GOCACHE="$CACHE/hclfmt/gocache" GOFLAGS= \
      go build -o "$out.tmp" github.com/hashicorp/hcl/v2/cmd/hclfmt >&2
    mv "$out.tmp" "$out"
  fi
  echo "$out"
}

# The Terraform providers for `terraform validate`: hashicorp/aws from the image's filesystem
# mirror (/opt/tf-plugins), hashicorp/kubernetes built once from the Go module proxy (no
# registry is reachable). The proxy serves the provider only as the pseudo-version below:
# commit 3a33fb6cc605 of 2026-08-21, whose CHANGELOG tops out at 3.2.1 (installed as 3.2.1).
# Prints the path of a Terraform CLI config that installs both from the mirrors.
K8S_PROVIDER_VERSION=3.2.1
K8S_PROVIDER_MODULE=github.com/hashicorp/terraform-provider-kubernetes@v1.13.4-0.20260821094251-3a33fb6cc605
AWS_MIRROR=/opt/tf-plugins
tf_cli_config() {
  local mirror="$CACHE/tf-plugins"
  local dir="$mirror/registry.terraform.io/hashicorp/kubernetes/$K8S_PROVIDER_VERSION/linux_amd64"
  local bin="$dir/terraform-provider-kubernetes_v$K8S_PROVIDER_VERSION"
  if [[ ! -x "$bin" ]]; then
    log "building the kubernetes provider $K8S_PROVIDER_VERSION from the Go module proxy (once; about 3 min)" >&2
    mkdir -p "$dir"
    GOBIN="$dir/.gobin" go install "$K8S_PROVIDER_MODULE" >&2
    mv "$dir/.gobin/terraform-provider-kubernetes" "$bin"
    rmdir "$dir/.gobin"
  fi
  [[ -d "$AWS_MIRROR/registry.terraform.io/hashicorp/aws" ]] ||
    { echo "FAIL no hashicorp/aws provider in $AWS_MIRROR (the image's mirror)" >&2; return 1; }
  cat >"$mirror/cli.tfrc" <<TFRC
provider_installation {
  filesystem_mirror {
    path    = "$AWS_MIRROR"
    include = ["registry.terraform.io/hashicorp/aws"]
  }
  filesystem_mirror {
    path    = "$mirror"
    include = ["registry.terraform.io/hashicorp/kubernetes"]
  }
}
TFRC
  echo "$mirror/cli.tfrc"
}

# kustomize, when neither kubectl nor kustomize is on PATH: built from the Go module proxy,
# its version set the way its release builds set it (checkov reads `kustomize version`).
KUSTOMIZE_VERSION=v5.5.0
kustomize_dir() {
  local dir="$CACHE/kustomize/$KUSTOMIZE_VERSION"
  if [[ ! -x "$dir/kustomize" ]]; then
    log "building kustomize $KUSTOMIZE_VERSION from the Go module proxy (once; about 1 min)" >&2
    mkdir -p "$dir"
    GOBIN="$dir" GOFLAGS= go install -ldflags "-X sigs.k8s.io/kustomize/api/provenance.version=$KUSTOMIZE_VERSION" \
      "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >&2
  fi
  echo "$dir"
}

export PYTHONDONTWRITEBYTECODE=1
start=$SECONDS
HCLFMT=$(hclfmt_bin)
PY=$(venv hcl2 "python-hcl2==$HCL2_VERSION pytest==$PYTEST_VERSION pyyaml==$PYYAML_VERSION boto3==$BOTO3_VERSION")
CHECKOV=$(venv checkov "checkov==$CHECKOV_VERSION")

mapfile -t TF < <(find infra -name '*.tf' -not -path '*/.terraform/*' | sort)
failed=0

log "hclfmt (${#TF[@]} files)"
for f in "${TF[@]}"; do
  if ! "$HCLFMT" "$f" >"$CACHE/infra/fmt.out"; then
    echo "FAIL $f: hclfmt could not parse it"; failed=1; continue
  fi
  if ! cmp -s "$f" "$CACHE/infra/fmt.out"; then
    if [[ $FIX == 1 ]]; then
      cp "$CACHE/infra/fmt.out" "$f"; echo "formatted $f"
    else
      echo "FAIL $f is not formatted (bash tests/infra/run.sh --fix):"
      diff -u "$f" "$CACHE/infra/fmt.out" | head -40 || true
      failed=1
    fi
  fi
done

if [[ $FIX == 1 ]]; then
  log "regenerating infra/README.md tables"
  "$PY/bin/python" tests/infra/gen_docs.py --write
fi

log "terraform fmt -check, init and validate (module and both examples)"
if ! command -v terraform >/dev/null; then
  echo "FAIL no terraform on PATH (the image carries Terraform 1.11)"; failed=1
elif ! CLI=$(tf_cli_config); then
  failed=1
else
  export TF_CLI_CONFIG_FILE=$CLI CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1
  terraform fmt -check -recursive -diff infra || { echo "FAIL terraform fmt (bash tests/infra/run.sh --fix formats with hclfmt)"; failed=1; }
  # In a copy: init writes .terraform/ and a lock file next to the configuration.
  work=$(mktemp -d)
  cp -r infra "$work/"
  for d in modules/stashless examples/complete examples/minimal; do
    if ! (cd "$work/infra/$d" && terraform init -backend=false -input=false -no-color >"$work/init.log" 2>&1); then
      echo "FAIL terraform init in infra/$d:"; tail -20 "$work/init.log"; failed=1; continue
    fi
    if (cd "$work/infra/$d" && terraform validate -no-color); then :; else
      echo "FAIL terraform validate in infra/$d"; failed=1
    fi
  done
  rm -rf "$work"
  unset TF_CLI_CONFIG_FILE
  # For the apply test (tests/infra/test_apply.py).
  export STASHLESS_TF_CLI_CONFIG=$CLI
fi

# checkov's kustomize framework and tests/infra/test_manifests.py render
# infra/manifests/bridge with `kubectl kustomize` (checkov prefers kubectl) or `kustomize`.
# Without either, kustomize is built once from the Go module proxy.
if ! command -v kubectl >/dev/null && ! command -v kustomize >/dev/null; then
  if KUSTOMIZE_DIR=$(kustomize_dir); then
    export PATH="$KUSTOMIZE_DIR:$PATH"
  else
    echo "FAIL could not build kustomize $KUSTOMIZE_VERSION"; failed=1
  fi
fi

log "pytest tests/infra"
"$PY/bin/python" -m pytest -q -p no:cacheprovider tests/infra || failed=1

log "checkov $CHECKOV_VERSION"
# checkov -d infra --compact over every framework that finds files there (terraform,
# kubernetes, kustomize, secrets), as JSON (not --quiet, so the skips and their reasons are
# in it); --skip-download: no Bridgecrew platform, the checks come with the package. The
# summary below prints, per framework, every failure and every skip with its reason, and
# fails when a framework that has files under infra/ did not report (checkov drops the
# kustomize framework without a word when it finds neither kubectl nor kustomize).
rm -f "$CACHE/infra/checkov.json"
"$CHECKOV/bin/checkov" -d infra --compact --skip-download \
  --download-external-modules false -o json >"$CACHE/infra/checkov.json" 2>"$CACHE/infra/checkov.err" || true
"$PY/bin/python" - "$CACHE/infra/checkov.json" "$CACHE/infra/checkov.err" infra <<'PYEOF' || failed=1
import json, pathlib, sys
import yaml
try:
    data = json.load(open(sys.argv[1]))
except ValueError:
    sys.stdout.write(open(sys.argv[2]).read()[-4000:])
    print("checkov produced no JSON report")
    sys.exit(1)
# One report per framework: a list when several ran, a bare report when one did.
reports = data if isinstance(data, list) else [data]

# The frameworks that must have reported, from what is under infra/.
infra = pathlib.Path(sys.argv[3])
files = [p for p in infra.rglob("*") if p.is_file() and ".terraform" not in p.parts]
want = {"secrets"}
if any(p.suffix == ".tf" for p in files):
    want.add("terraform")
if any(p.name in ("kustomization.yaml", "kustomization.yml", "Kustomization") for p in files):
    want.add("kustomize")
for p in files:
    if p.suffix in (".yaml", ".yml") and any(isinstance(d, dict) and "apiVersion" in d and "kind" in d for d in yaml.safe_load_all(p.read_text())):
        want.add("kubernetes")
        break

bad = 0
total = 0
seen = set()
for r in reports:
    fw = r.get("check_type")
    summ = r.get("summary")
    if not fw or not isinstance(summ, dict):
        print(f"FAIL checkov returned something other than a report: {json.dumps(r)[:500]}")
        sys.stdout.write(open(sys.argv[2]).read()[-2000:])
        bad += 1
        continue
    seen.add(fw)
    p, f, s = summ.get("passed", 0), summ.get("failed", 0), summ.get("skipped", 0)
    total += p
    if summ.get("parsing_errors"):
        print(f"FAIL [{fw}] checkov could not parse {summ['parsing_errors']} file(s): {r.get('parsing_errors', [])}")
        bad += 1
    for c in r.get("results", {}).get("failed_checks", []):
        print(f"FAIL [{fw}] {c['check_id']} {c['check_name']}\n     {c['resource']} ({c['file_path']}:{c['file_line_range']})")
    bad += f
    skips = {}
    for c in r.get("results", {}).get("skipped_checks", []):
        res = c["resource"].split("module.stashless.", 1)[-1].split("[")[0]
        where = res if fw != "secrets" else c["file_path"]  # a secret's resource is its hash
        skips.setdefault((c["check_id"], where), c.get("check_result", {}).get("suppress_comment", ""))
    for (check, res), why in sorted(skips.items()):
        print(f"skip [{fw}] {check} {res}: {why.strip()}")
    print(f"checkov {fw}: {p} passed, {f} failed, {s} skipped")
for fw in sorted(want - seen):
    print(f"FAIL checkov reported nothing for {fw}, which has files under infra/ (see {sys.argv[2]})")
    bad += 1
sys.exit(1 if bad or not total else 0)
PYEOF

log "done in $((SECONDS - start)) s"
if [[ $failed != 0 ]]; then
  echo "infra checks FAILED"
  exit 1
fi
echo "infra checks passed"
