#!/usr/bin/env bash
# Static validation of the Kubernetes manifests (k8s/), no cluster needed:
#   * kustomize builds of the base, each component on it, the valid combinations (tracing
#     included, which no overlay uses) and both overlays; keda and hpa-cpu together must be refused (two autoscalers on one Deployment);
#   * every built-in object against the Kubernetes 1.34 schemas, strictly (unknown fields are
#     errors); KEDA's objects against KEDA's schemas; negative fixtures prove both can fail;
#   * structure: no duplicate objects, one autoscaler per Deployment and no `replicas:` in
#     it, CPU and memory requests and limits everywhere (k8s/check_manifests.py static);
#   * checkov on the overlays, with the exceptions of k8s/tests/checkov-exceptions.yaml;
#   * the Prometheus config with promtool, and its rule file where the Deployment mounts it;
#   * shellcheck of every shell script in the repository.
# The checks against the running binaries (env names, ports, probes, metric names) are
# k8s/check_manifests.py drift, which needs a build: `make k8s-validate` runs both.
# Needs: kubectl (its kustomize); python3; PyYAML, kubernetes-validate and checkov (PyPI,
# installed into .venv-tools/ when missing: deploy/tools.sh); node + npm
# (@kubernetes-models/keda, installed by this script from k8s/tests/keda's lockfile),
# promtool (Debian prometheus), shellcheck (Debian), named with the apt-get command when
# missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=deploy/tools.sh
source deploy/tools.sh
need_kubectl
need_debian python3=python3 node=nodejs npm=npm promtool=prometheus shellcheck=shellcheck
need_pypi python3:yaml=PyYAML kubernetes-validate=kubernetes-validate checkov=checkov

k8s_version=1.34.0 # kindest/node v1.34.0, pinned by deploy/kind
failures=0
step() { printf -- '-- %s\n' "$1"; }
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# kustomize accepts only relative paths to other kustomizations, so the combinations are
# written under k8s/ itself; the folder ignores itself for git and goes away on exit.
work=$(mktemp -d "$root/k8s/.validate.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo '*' > "$work/.gitignore"
rendered="$work/rendered"
mkdir -p "$rendered"

# combination NAME COMPONENT...: a kustomization of the base with those components.
combination() {
  local name=$1; shift
  mkdir -p "$work/$name"
  {
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "resources: [../../base]"
    if [ $# -gt 0 ]; then
      echo "components:"
      for c in "$@"; do echo "  - ../../components/$c"; done
    fi
  } > "$work/$name/kustomization.yaml"
}

build() { # build NAME DIR: kustomize DIR into $rendered/NAME.yaml
  if kubectl kustomize "$2" > "$rendered/$1.yaml" 2> "$work/$1.err"; then
    printf '   %-40s %3d objects\n' "$1" "$(grep -c '^kind:' "$rendered/$1.yaml")"
  else
    cat "$work/$1.err" >&2
    fail "kustomize build of $1 ($2)"
    rm -f "$rendered/$1.yaml"
  fi
}

step "unit tests of k8s/check_manifests.py (PromQL names, metric matching)"
python3 k8s/tests/test_check_manifests.py 2>&1 | tail -n 3 | sed 's/^/   /' || fail "unit tests"

step "kustomize builds ($(kubectl version --client 2>/dev/null | grep -i kustomize))"
build base k8s/base
for c in kind keda hpa-cpu network-policies tracing; do
  combination "base+$c" "$c"
done
combination "base+keda+network-policies" keda network-policies
combination "base+hpa-cpu+network-policies" hpa-cpu network-policies
combination "base+kind+keda+network-policies" kind keda network-policies
combination "base+kind+hpa-cpu+network-policies" kind hpa-cpu network-policies
# tracing after network-policies, as an overlay must list it (it extends their egress); the
# structure check below fails a build whose policies keep the api from its collector.
combination "base+kind+keda+network-policies+tracing" kind keda network-policies tracing
for dir in "$work"/base+*/; do
  name=$(basename "$dir")
  build "$name" "$dir"
done
build overlay-kind k8s/overlays/kind
build overlay-kind-hpa k8s/overlays/kind-hpa

step "structure: duplicates, one autoscaler per Deployment, no replicas under one, resources"
python3 k8s/check_manifests.py static "$rendered"/*.yaml | sed 's/^/   /' || fail "structure"
# keda and hpa-cpu together must be refused: the check above has to catch it.
combination conflict keda hpa-cpu
kubectl kustomize "$work/conflict" > "$work/conflict.yaml"
if python3 k8s/check_manifests.py static "$work/conflict.yaml" > "$work/conflict.out" 2>&1; then
  cat "$work/conflict.out"
  fail "base+keda+hpa-cpu passed the structure check: two autoscalers per Deployment went unnoticed"
elif grep -q "has 2 autoscalers" "$work/conflict.out"; then
  echo "   base+keda+hpa-cpu refused as it must be: $(grep -c 'has 2 autoscalers' "$work/conflict.out") Deployments with 2 autoscalers"
else
  cat "$work/conflict.out"
  fail "base+keda+hpa-cpu failed the structure check, but not for its two autoscalers"
fi

step "schemas: kubernetes-validate --strict $k8s_version (built-in kinds), @kubernetes-models/keda (KEDA)"
(cd k8s/tests/keda && npm ci --no-audit --no-fund --loglevel=error > /dev/null)
core_total=0 keda_total=0
for file in "$rendered"/*.yaml; do
  name=$(basename "$file" .yaml)
  split=$(python3 k8s/check_manifests.py split "$file" "$work/$name.core.yaml" "$work/$name.crd.json")
  # --quiet prints only what did not pass: a schema error, or a kind it has no schema for
  # (custom kinds are split off above, so that too is a failure here).
  if out=$(kubernetes-validate --strict --quiet -k "$k8s_version" "$work/$name.core.yaml" 2>&1) && [ -z "$out" ]; then
    core=$(grep -c '^kind:' "$work/$name.core.yaml")
    core_total=$((core_total + core))
  else
    echo "${out//$work\//}" >&2
    fail "$name: kubernetes-validate"
    core=FAILED
  fi
  if [ "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/$name.crd.json")" -gt 0 ]; then
    if out=$(node k8s/tests/keda/validate.mjs "$work/$name.crd.json" "$name" 2>&1); then
      keda=$(echo "$out" | grep -c '^ok ')
      keda_total=$((keda_total + keda))
    else
      echo "$out" >&2
      fail "$name: KEDA schema"
      keda=FAILED
    fi
  else
    keda=0
  fi
  printf '   %-40s %s built-in valid, %s KEDA valid  (%s)\n' "$name" "$core" "$keda" "$split"
done
echo "   $core_total built-in and $keda_total KEDA objects valid over all builds"

# Both validators must reject a misspelled field: otherwise the lines above prove nothing.
if out=$(kubernetes-validate --strict -k "$k8s_version" k8s/tests/invalid-core.yaml 2>&1); then
  fail "kubernetes-validate accepted k8s/tests/invalid-core.yaml"
elif grep -q "'terminationGracePeriodSecond' was unexpected" <<< "$out"; then
  echo "   k8s/tests/invalid-core.yaml rejected: misspelled terminationGracePeriodSecond"
else
  echo "$out" >&2
  fail "kubernetes-validate rejected k8s/tests/invalid-core.yaml, but not for its misspelled field"
fi
python3 k8s/check_manifests.py split k8s/tests/invalid-keda.yaml /dev/null "$work/invalid-keda.json" > /dev/null
fixtures=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/invalid-keda.json")
if out=$(node k8s/tests/keda/validate.mjs "$work/invalid-keda.json" fixture 2>&1); then
  echo "$out" >&2
  fail "the KEDA check accepted every object of k8s/tests/invalid-keda.yaml"
elif grep -q "^fixture: 0 valid, $fixtures invalid" <<< "$out"; then
  echo "   k8s/tests/invalid-keda.yaml: all $fixtures objects rejected:"
  grep '^FAIL' <<< "$out" | sed 's/^FAIL fixture /     /'
else
  echo "$out" >&2
  fail "the KEDA check accepted some object of k8s/tests/invalid-keda.yaml"
fi

step "checkov $(checkov --version) on the overlays"
# --skip-download: the bundled checks only, no calls out. Exceptions, each with its reason:
# k8s/tests/checkov-exceptions.yaml (applied by check_manifests.py, per check and object).
for overlay in overlay-kind overlay-kind-hpa; do
  checkov --framework kubernetes --skip-download --output json \
    --file "$rendered/$overlay.yaml" > "$work/$overlay.checkov.json" 2> "$work/$overlay.checkov.err" || true
  if [ ! -s "$work/$overlay.checkov.json" ]; then
    cat "$work/$overlay.checkov.err" >&2
    fail "checkov did not run on $overlay"
    continue
  fi
  echo "   $overlay:"
  python3 k8s/check_manifests.py checkov "$work/$overlay.checkov.json" k8s/tests/checkov-exceptions.yaml \
    | sed 's/^/     /' || fail "checkov on $overlay"
done

step "Prometheus config ($(promtool --version 2>&1 | head -n 1))"
python3 k8s/check_manifests.py prometheus "$rendered/overlay-kind.yaml" | sed 's/^/   /' \
  || fail "Prometheus config"

step "shellcheck ($(shellcheck --version | sed -n 's/^version: //p'))"
mapfile -t scripts < <(git ls-files '*.sh'; echo .ci/run)
# This script too, before its first commit.
printf '%s\n' "${scripts[@]}" | grep -qx k8s/validate.sh || scripts+=(k8s/validate.sh)
# -x -P SCRIPTDIR: follow `source "$(dirname "$0")/common.sh"`, so variables it sets are known;
# -s bash: loadtests/common.sh is sourced, not run, and has no shebang (every script is bash).
if shellcheck -x -P SCRIPTDIR -s bash "${scripts[@]}"; then
  echo "   ${#scripts[@]} scripts clean"
else
  fail "shellcheck"
fi

if [ "$failures" -gt 0 ]; then
  echo "Kubernetes manifests: $failures check(s) failed" >&2
  exit 1
fi
echo "Kubernetes manifests valid"
