#!/usr/bin/env bash
# From nothing to fractile autoscaling on a local kind cluster, in one command:
#
#   deploy/kind/up.sh            # the KEDA overlay, k8s/overlays/kind
#   FRACTILE_OVERLAY=k8s/overlays/kind-hpa deploy/kind/up.sh   # plain CPU HPAs, no KEDA
#   deploy/kind/up.sh --render   # only write and render the tagged overlay (needs kubectl)
#
# Checks the prerequisites (docker with a running daemon, kind >= v0.24, kubectl), creates the
# cluster of deploy/kind/kind.yaml unless it exists, builds the image (Dockerfile target
# `runtime`) and the load generator's image (target `load`) under a tag unique to the source,
# loads both into the nodes, installs metrics-server and KEDA at pinned versions, applies the
# overlay with that tag, waits for every rollout, and fails unless every HPA shows numeric
# targets. Safe to run again: each step checks before it changes anything, and a re-run with
# new code rolls the fleet to the new tag.
#
# Settings (environment): FRACTILE_OVERLAY (repository-relative overlay folder),
# FRACTILE_IMAGE_TAG (instead of the computed tag), FRACTILE_ROLLOUT_TIMEOUT (seconds per
# rollout, default 300), FRACTILE_HPA_TIMEOUT (seconds for numeric HPA targets, default 180).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/deploy/kind/lib.sh"

KIND_MIN=0.24.0 # kindnet enforces NetworkPolicies from here on
KIND_PINNED=0.30.0 # the release whose node image kind.yaml pins
METRICS_SERVER_VERSION=v0.8.1
METRICS_SERVER_URL="https://github.com/kubernetes-sigs/metrics-server/releases/download/$METRICS_SERVER_VERSION/components.yaml"
KEDA_VERSION=2.18.3
KEDA_URL="https://github.com/kedacore/keda/releases/download/v$KEDA_VERSION/keda-$KEDA_VERSION.yaml"

OVERLAY=${FRACTILE_OVERLAY:-k8s/overlays/kind}
ROLLOUT_TIMEOUT=${FRACTILE_ROLLOUT_TIMEOUT:-300}
HPA_TIMEOUT=${FRACTILE_HPA_TIMEOUT:-180}
# Redis and RabbitMQ first: the api and the workers are ready only once they can reach both.
ROLLOUTS="deployment/redis statefulset/rabbitmq deployment/api deployment/worker deployment/prometheus deployment/grafana"

RENDER_ONLY=0
case "${1:-}" in
  "") ;;
  --render) RENDER_ONLY=1 ;;
  -h | --help) usage ;;
  *) die "unknown argument '$1' (try --help)" ;;
esac

check_prerequisites() {
  local problems="" version
  log "prerequisites"
  if ! command -v docker > /dev/null 2>&1; then
    problems="$problems
  - docker is not installed: https://docs.docker.com/get-docker/ (Docker Desktop on macOS and
    Windows, Docker Engine on Linux)"
  elif ! docker info > /dev/null 2>&1; then
    problems="$problems
  - docker is installed but its daemon does not answer (\`docker info\` fails): start Docker
    Desktop, or on Linux \`sudo systemctl start docker\` (and add your user to the docker group)"
  else
    info "docker $(docker version --format '{{.Server.Version}}' 2> /dev/null || echo '?') (daemon answers)"
  fi
  if ! command -v kind > /dev/null 2>&1; then
    problems="$problems
  - kind is not installed: https://kind.sigs.k8s.io/docs/user/quick-start/#installation
    (v$KIND_PINNED: \`brew install kind\`, or \`go install sigs.k8s.io/kind@v$KIND_PINNED\`)"
  else
    version=$(kind version 2> /dev/null | sed -n 's/^kind v\([0-9][0-9.]*\).*/\1/p' || true)
    if [ -z "$version" ]; then
      problems="$problems
  - could not read kind's version from \`kind version\`: '$(kind version 2>&1 | head -n 1 || true)'"
    elif [ "$(version_number "$version")" -lt "$(version_number "$KIND_MIN")" ]; then
      problems="$problems
  - kind v$version found; v$KIND_MIN or later is needed (earlier kindnet ignores
    NetworkPolicies): install v$KIND_PINNED, https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
    else
      info "kind v$version"
      [ "$(version_number "$version")" -ge "$(version_number "$KIND_PINNED")" ] ||
        warn "kind v$version is older than v$KIND_PINNED, whose node image kind.yaml pins; if the cluster does not start, install v$KIND_PINNED"
    fi
  fi
  if ! command -v kubectl > /dev/null 2>&1; then
    problems="$problems
  - kubectl is not installed: https://kubernetes.io/docs/tasks/tools/ (v1.33 to v1.35 for this
    Kubernetes 1.34 cluster)"
  else
    version=$(kubectl version --client 2> /dev/null | sed -n 's/^Client Version: v\([0-9][0-9.]*\).*/\1/p' || true)
    info "kubectl v${version:-?}"
    case "$version" in
      1.33.* | 1.34.* | 1.35.*) ;;
      *) warn "kubectl v${version:-?} is outside the supported skew of the Kubernetes 1.34 server (v1.33 to v1.35)" ;;
    esac
  fi
  if [ -n "$problems" ]; then
    printf 'error: deploy/kind/up.sh needs docker, kind and kubectl:%s\n' "$problems" >&2
    exit 1
  fi
}

# A tag per source state, never `latest` (which makes kubelet pull from a registry): the
# commit, plus a timestamp when the work tree has changes the commit does not hold.
image_tag() {
  local sha
  if [ -n "${FRACTILE_IMAGE_TAG:-}" ]; then
    printf '%s' "$FRACTILE_IMAGE_TAG" | grep -Eq '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$' ||
      die "FRACTILE_IMAGE_TAG='$FRACTILE_IMAGE_TAG' is not a valid image tag"
    [ "$FRACTILE_IMAGE_TAG" != latest ] || die "FRACTILE_IMAGE_TAG must not be 'latest'"
    echo "$FRACTILE_IMAGE_TAG"
  elif sha=$(git -C "$ROOT" rev-parse --short=12 HEAD 2> /dev/null); then
    if [ -n "$(git -C "$ROOT" status --porcelain 2> /dev/null)" ]; then
      echo "$sha-dirty-$(date -u +%Y%m%dT%H%M%S)"
    else
      echo "$sha"
    fi
  else
    echo "local-$(date -u +%Y%m%dT%H%M%S)"
  fi
}

# The overlay with the image tag set, without touching a committed file: a kustomization
# under deploy/kind/.build/ whose only resource is the overlay. Rendered once, so the same
# objects are inspected (which autoscaler) and applied.
render() {
  local rel=${OVERLAY#"$ROOT"/}
  rel=${rel%/}
  case "$rel" in /* | ../* | */../*) die "FRACTILE_OVERLAY must be a folder inside the repository: '$OVERLAY'" ;; esac
  [ -f "$ROOT/$rel/kustomization.yaml" ] ||
    die "FRACTILE_OVERLAY='$OVERLAY' is not a kustomization folder of this repository (e.g. k8s/overlays/kind-hpa)"
  mkdir -p "$BUILD_DIR/overlay"
  cat > "$BUILD_DIR/overlay/kustomization.yaml" << EOF
# Written by deploy/kind/up.sh on each run; not committed (.gitignore).
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../../../$rel
images:
  - name: fractile
    newTag: "$TAG"
EOF
  kubectl kustomize "$BUILD_DIR/overlay" > "$BUILD_DIR/manifests.yaml" ||
    die "kubectl kustomize $BUILD_DIR/overlay failed (kubectl with kustomize v5 is needed for components)"
  AUTOSCALERS=$(grep -cE '^kind: (ScaledObject|HorizontalPodAutoscaler)$' "$BUILD_DIR/manifests.yaml" || true)
  if grep -q '^kind: ScaledObject$' "$BUILD_DIR/manifests.yaml"; then NEEDS_KEDA=1; else NEEDS_KEDA=0; fi
  info "$rel with image fractile:$TAG -> $BUILD_DIR/manifests.yaml ($AUTOSCALERS autoscalers, KEDA needed: $([ "$NEEDS_KEDA" = 1 ] && echo yes || echo no))"
}

create_cluster() {
  log "cluster $CLUSTER"
  if cluster_exists; then
    info "exists; reusing it (deploy/kind/down.sh deletes it)"
  elif ! kind create cluster --config "$ROOT/deploy/kind/kind.yaml" --wait 180s; then
    die "kind could not create the cluster. If the error mentions a port: something else listens on 127.0.0.1:8080 or 127.0.0.1:3000 (the compose stack? \`docker compose down\`)"
  fi
  kc cluster-info > /dev/null || die "the API server of $CONTEXT does not answer"
}

build_and_load() {
  log "images fractile:$TAG and fractile-load:$TAG"
  # The second build reuses the first one's cached builder layers.
  docker build -f "$ROOT/deploy/Dockerfile" --target runtime -t "fractile:$TAG" "$ROOT"
  docker build -f "$ROOT/deploy/Dockerfile" --target load -t "fractile-load:$TAG" "$ROOT"
  kind load docker-image --name "$CLUSTER" "fractile:$TAG" "fractile-load:$TAG"
}

install_metrics_server() {
  local image args
  log "metrics-server $METRICS_SERVER_VERSION"
  image=$(kc -n kube-system get deployment metrics-server -o jsonpath='{.spec.template.spec.containers[0].image}' 2> /dev/null || true)
  case "$image" in
    *":$METRICS_SERVER_VERSION") info "already installed" ;;
    # Applying again would reset the args patched below, so only when absent or another version.
    *) kc apply -f "$METRICS_SERVER_URL" ;;
  esac
  # kind's kubelets serve certificates without IP SANs, which metrics-server rejects (the HPA
  # then shows <unknown>). Added once: a second identical arg would be harmless but noisy.
  args=$(kc -n kube-system get deployment metrics-server -o jsonpath='{.spec.template.spec.containers[0].args}')
  case "$args" in
    *--kubelet-insecure-tls*) info "--kubelet-insecure-tls already set" ;;
    *) kc -n kube-system patch deployment metrics-server --type=json \
      -p '[{"op":"add","path":"/spec/template/spec/containers/0/args/-","value":"--kubelet-insecure-tls"}]' ;;
  esac
  kc -n kube-system rollout status deployment/metrics-server --timeout=180s
  kc wait --for=condition=Available apiservice/v1beta1.metrics.k8s.io --timeout=180s
}

install_keda() {
  log "KEDA $KEDA_VERSION"
  # Server-side: KEDA's CRDs are too large for client-side apply's last-applied annotation.
  kc apply --server-side -f "$KEDA_URL" > /dev/null
  kc wait --for=condition=Established crd/scaledobjects.keda.sh crd/triggerauthentications.keda.sh --timeout=60s
  # The admission webhook must answer before a ScaledObject can be created.
  kc -n keda wait --for=condition=Available deployment --all --timeout=300s
  kc wait --for=condition=Available apiservice/v1beta1.external.metrics.k8s.io --timeout=180s
}

# `kubectl apply` never deletes, so switching overlays would leave the other overlay's
# autoscalers behind, and two autoscalers on one Deployment fight over its replica count.
remove_other_autoscalers() {
  kc get namespace "$NAMESPACE" > /dev/null 2>&1 || return 0
  if [ "$NEEDS_KEDA" = 1 ]; then
    kc -n "$NAMESPACE" delete hpa api worker --ignore-not-found
  elif kc get crd scaledobjects.keda.sh > /dev/null 2>&1; then
    kc -n "$NAMESPACE" delete scaledobject api worker --ignore-not-found
  fi
}

diagnose() {
  printf '\n--- pods\n' >&2
  kc -n "$NAMESPACE" get pods -o wide >&2 || true
  printf '\n--- describe %s (end)\n' "$1" >&2
  kc -n "$NAMESPACE" describe "$1" 2>&1 | tail -n 40 >&2 || true
  printf '\n--- recent events\n' >&2
  kc -n "$NAMESPACE" get events --sort-by=.lastTimestamp 2>&1 | tail -n 30 >&2 || true
}

wait_rollouts() {
  local r
  log "rollouts (up to ${ROLLOUT_TIMEOUT}s each)"
  for r in $ROLLOUTS; do
    if ! kc -n "$NAMESPACE" rollout status "$r" --timeout="${ROLLOUT_TIMEOUT}s"; then
      diagnose "$r"
      die "$r did not become ready within ${ROLLOUT_TIMEOUT}s (see above)"
    fi
  done
}

# An HPA without numbers (<unknown>) cannot scale: metrics-server not serving, KEDA unable to
# reach Prometheus or RabbitMQ, or a query matching no series.
wait_hpa_targets() {
  local deadline out count
  [ "$AUTOSCALERS" -gt 0 ] || return 0
  log "HPA targets (numeric within ${HPA_TIMEOUT}s)"
  deadline=$(($(date +%s) + HPA_TIMEOUT))
  while :; do
    out=$(kc -n "$NAMESPACE" get hpa --no-headers 2> /dev/null || true)
    count=$(printf '%s\n' "$out" | grep -c . || true)
    if [ "$count" -ge "$AUTOSCALERS" ] && ! printf '%s\n' "$out" | grep -q '<unknown>'; then
      kc -n "$NAMESPACE" get hpa
      return 0
    fi
    [ "$(date +%s)" -lt "$deadline" ] || break
    sleep 5
  done
  printf '\n--- kubectl get hpa\n' >&2
  kc -n "$NAMESPACE" get hpa >&2 || true
  printf '\n--- kubectl describe hpa\n' >&2
  kc -n "$NAMESPACE" describe hpa >&2 || true
  printf '\n--- metrics-server (last lines)\n' >&2
  kc -n kube-system logs deployment/metrics-server --tail=15 >&2 || true
  if [ "$NEEDS_KEDA" = 1 ]; then
    printf '\n--- keda-operator (last lines)\n' >&2
    kc -n keda logs deployment/keda-operator --tail=25 >&2 || true
  fi
  die "expected $AUTOSCALERS HPAs with numeric targets, got $count within ${HPA_TIMEOUT}s (<unknown> means the autoscaler cannot read that metric yet; see above)"
}

TAG=$(image_tag)
if [ "$RENDER_ONLY" = 1 ]; then
  command -v kubectl > /dev/null 2>&1 || die "kubectl is not installed: https://kubernetes.io/docs/tasks/tools/"
  log "render"
  render
  grep -E '^[[:space:]]+image: ' "$BUILD_DIR/manifests.yaml" | sort | uniq -c
  exit 0
fi

check_prerequisites
log "render"
render
create_cluster
build_and_load
install_metrics_server
if [ "$NEEDS_KEDA" = 1 ]; then install_keda; fi
log "apply"
remove_other_autoscalers
kc apply -f "$BUILD_DIR/manifests.yaml"
wait_rollouts
wait_hpa_targets

cat << EOF

fractile is running on $CONTEXT ($OVERLAY, image fractile:$TAG).

  the map     http://localhost:8080
  Grafana     http://localhost:3000   (the scaling-checklist dashboard is the home page)

Next:
  deploy/kind/watch.sh     a line every 5 s: replicas, queue depth, in-flight, p99
  deploy/kind/load.sh      about 6 minutes of rising, steady, then falling load (a Job)
  kubectl --context $CONTEXT -n $NAMESPACE get hpa -w
  deploy/kind/down.sh      delete the cluster
EOF
