#!/usr/bin/env bash
# Deletes the kind cluster of deploy/kind/up.sh, and with it everything in it (the images
# loaded into its nodes included; the images in the local docker stay). Nothing to do when
# there is no such cluster.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/deploy/kind/lib.sh"

if ! command -v kind > /dev/null 2>&1; then
  info "kind is not installed, so there is no kind cluster to delete"
elif cluster_exists; then
  log "deleting kind cluster $CLUSTER"
  kind delete cluster --name "$CLUSTER"
else
  info "no kind cluster named $CLUSTER: nothing to delete"
fi
rm -rf "$BUILD_DIR/overlay" "$BUILD_DIR/manifests.yaml"
