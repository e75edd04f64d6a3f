# shellcheck shell=bash
# shellcheck disable=SC2034 # CLUSTER, NAMESPACE, BUILD_DIR: used by the scripts sourcing this
# Shared by the deploy/kind scripts (sourced, not run): the cluster's name, the repository
# root, logging, and a kubectl bound to the kind cluster's context.
#
# Every kubectl call goes through `kc`, which names the context explicitly: whatever context
# the user's kubeconfig has selected (a work cluster, say), these scripts only ever talk to
# kind-fractile.
#
# Written for bash 3.2 too (macOS's /bin/bash): no associative arrays, no mapfile, no
# ${var,,}, no `timeout` (not on macOS); deadlines are counted with `date +%s`.

# The name in kind.yaml; kind prefixes contexts with "kind-".
CLUSTER=fractile
CONTEXT="kind-$CLUSTER"
NAMESPACE=fractile
# The kind scripts' own scratch space (gitignored): the tag kustomization, e2e samples.
BUILD_DIR="$ROOT/deploy/kind/.build"

log() { printf '\n==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
# usage: prints the calling script's header comment (its help) and exits.
usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit 0
}
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

kc() { kubectl --context "$CONTEXT" "$@"; }

# `kind get clusters` lists one name a line; "No kind clusters found." goes to stderr. Read
# whole before grep -q, which would otherwise close the pipe early (a SIGPIPE under pipefail).
cluster_exists() {
  local clusters
  clusters=$(kind get clusters 2> /dev/null || true)
  grep -qx "$CLUSTER" <<< "$clusters"
}

# For scripts that need a running cluster made by up.sh.
require_cluster() {
  local tool
  for tool in kind kubectl; do
    command -v "$tool" > /dev/null 2>&1 || die "$tool is not installed (run deploy/kind/up.sh for the prerequisites)"
  done
  cluster_exists || die "no kind cluster named '$CLUSTER': run deploy/kind/up.sh first"
  kubectl config get-contexts "$CONTEXT" > /dev/null 2>&1 ||
    die "your kubeconfig has no context $CONTEXT: kind export kubeconfig --name $CLUSTER"
  kc get namespace "$NAMESPACE" > /dev/null 2>&1 ||
    die "namespace '$NAMESPACE' is missing in $CONTEXT: run deploy/kind/up.sh first"
}

# "1.2.3" → 1002003, for comparing versions with -ge (each part below 1000).
version_number() {
  local major minor patch
  IFS=. read -r major minor patch <<< "$1"
  # "0-rc.1" and the like: keep the leading digits.
  major=${major%%[!0-9]*} minor=${minor%%[!0-9]*} patch=${patch%%[!0-9]*}
  echo $((10#${major:-0} * 1000000 + 10#${minor:-0} * 1000 + 10#${patch:-0}))
}
