#!/usr/bin/env bash
# The autoscaling end-to-end test on a cluster made by deploy/kind/up.sh (and the body of
# .github/workflows/kind-e2e.yml): runs deploy/kind/load.sh, samples the api and worker
# Deployments every 5 s during the load and after it, and passes only if
#   - the api and the worker each had more ready pods than their autoscaler's minimum during
#     the load, and
#   - each came back to its minimum within E2E_SETTLE_SECONDS (default 600) after the load
#     ended, and was still there at the last sample.
# Minimums are read from the cluster's HPAs (KEDA's or the hpa-cpu component's), not
# assumed. Samples and logs go to E2E_OUT (default deploy/kind/.build/e2e).
#
#   deploy/kind/e2e.sh                  # load, sample, judge (about 6 + up to 10 minutes)
#   deploy/kind/e2e.sh check SAMPLES    # only judge a samples file written by a run
#
# Load settings (FRACTILE_LOAD_PROFILE, FRACTILE_LOAD_SCENARIO) pass through to load.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/deploy/kind/lib.sh"

INTERVAL=5
SETTLE_SECONDS=${E2E_SETTLE_SECONDS:-600}
OUT=${E2E_OUT:-$BUILD_DIR/e2e}

# The verdict on a samples file: lines "EPOCH PHASE API_DESIRED API_READY WORKER_DESIRED
# WORKER_READY" (PHASE load or after), after the header lines "# min api N", "# min worker N"
# and "# load-start EPOCH". Prints one line per Deployment; exits 1 if either fails.
check() {
  [ -f "$1" ] || die "no samples file '$1'"
  awk '
    function verdict(name, col,    ok) {
      ok = 1
      if (!(name in min)) { printf "%s: FAIL, no minimum recorded\n", name; return 0 }
      printf "%s: minimum %d, peak %d ready during the load", name, min[name], peak[name]
      if (peak[name] > min[name]) printf " (first above the minimum at +%ds)", up_at[name] - start
      else { printf ", never above the minimum"; ok = 0 }
      if (name in down_at) printf "; back to %d at +%ds, %ds after the load", min[name], down_at[name] - start, down_at[name] - load_end
      else { printf "; not back to %d after the load", min[name]; ok = 0 }
      if (last[name] != min[name]) { printf "; %d at the last sample", last[name]; ok = 0 }
      printf ": %s\n", ok ? "ok" : "FAIL"
      return ok
    }
    $1 == "#" && $2 == "min" { min[$3] = $4; next }
    $1 == "#" && $2 == "load-start" { start = $3; next }
    $1 ~ /^#/ || NF < 6 { next }
    {
      t = $1; phase = $2
      desired["api"] = $3; ready["api"] = $4; desired["worker"] = $5; ready["worker"] = $6
      if (start == "") start = t
      for (name in desired) {
        if (phase == "load") {
          if (ready[name] > peak[name]) peak[name] = ready[name]
          if (!(name in up_at) && (name in min) && ready[name] > min[name]) up_at[name] = t
          load_end = t
        } else if (phase == "after") {
          # Back at the minimum: the autoscaler asks for it and no extra pod is left ready.
          at_min = desired[name] == min[name] && ready[name] == min[name]
          if (at_min && !(name in down_at)) down_at[name] = t
          if (!at_min) delete down_at[name]
        }
        last[name] = desired[name]
      }
      samples++
    }
    END {
      if (samples == 0) { print "FAIL: no samples"; exit 1 }
      a = verdict("api"); w = verdict("worker")
      exit (a && w) ? 0 : 1
    }
  ' "$1"
}

case "${1:-}" in
  "") ;;
  check)
    [ $# -eq 2 ] || die "usage: deploy/kind/e2e.sh check SAMPLES"
    check "$2"
    exit
    ;;
  -h | --help) usage ;;
  *) die "unknown argument '$1' (try --help)" ;;
esac

require_cluster
mkdir -p "$OUT"
samples="$OUT/samples.txt"

# The minimum of the autoscaler of each Deployment (HPA objects exist for both kinds of overlay).
minimums=$(kc -n "$NAMESPACE" get hpa -o jsonpath='{range .items[*]}{.spec.scaleTargetRef.name} {.spec.minReplicas}{"\n"}{end}')
api_min=$(printf '%s\n' "$minimums" | awk '$1 == "api" { print $2 }')
worker_min=$(printf '%s\n' "$minimums" | awk '$1 == "worker" { print $2 }')
if [ -z "$api_min" ] || [ -z "$worker_min" ]; then
  die "no HPA for the api and the worker in $NAMESPACE (found: $(printf '%s' "$minimums" | tr '\n' ' ')); run deploy/kind/up.sh"
fi

# One sample: the Deployments' desired (spec, set by the autoscaler) and ready pod counts.
sample() {
  local line api_d api_r worker_d worker_r
  line=$(kc -n "$NAMESPACE" get deployment api worker \
    -o jsonpath='{range .items[*]}{.metadata.name} {.spec.replicas} {.status.readyReplicas}{"\n"}{end}' 2> /dev/null || true)
  api_d=$(printf '%s\n' "$line" | awk '$1 == "api" { print $2 }')
  api_r=$(printf '%s\n' "$line" | awk '$1 == "api" { print ($3 == "" ? 0 : $3) }')
  worker_d=$(printf '%s\n' "$line" | awk '$1 == "worker" { print $2 }')
  worker_r=$(printf '%s\n' "$line" | awk '$1 == "worker" { print ($3 == "" ? 0 : $3) }')
  if [ -z "$api_d" ] || [ -z "$worker_d" ]; then
    warn "could not read the Deployments at $(date +%T)"
    return 0
  fi
  printf '%s %s %s %s %s %s\n' "$(date +%s)" "$1" "$api_d" "$api_r" "$worker_d" "$worker_r" | tee -a "$samples"
  if [ $((count % 6)) -eq 0 ]; then
    { date -u +%FT%TZ; kc -n "$NAMESPACE" get hpa 2>&1; echo; } >> "$OUT/hpa.txt"
  fi
  count=$((count + 1))
}

load_pid=""
on_exit() {
  if [ -n "$load_pid" ] && kill -0 "$load_pid" 2> /dev/null; then
    kill -TERM "$load_pid" 2> /dev/null || true
    wait "$load_pid" 2> /dev/null || true
  fi
}
trap on_exit EXIT

count=0
start=$(date +%s)
{
  echo "# epoch phase api_desired api_ready worker_desired worker_ready"
  echo "# min api $api_min"
  echo "# min worker $worker_min"
  echo "# load-start $start"
} > "$samples"
: > "$OUT/hpa.txt"
log "load (deploy/kind/load.sh, log in $OUT/load.log); minimums: api $api_min, worker $worker_min"
"$ROOT/deploy/kind/load.sh" > "$OUT/load.log" 2>&1 &
load_pid=$!
echo "epoch phase api_desired api_ready worker_desired worker_ready"
while kill -0 "$load_pid" 2> /dev/null; do
  sample load
  sleep "$INTERVAL"
done
load_status=0
wait "$load_pid" || load_status=$?
load_pid=""
tail -n 3 "$OUT/load.log"
[ "$load_status" -eq 0 ] || die "deploy/kind/load.sh failed (exit $load_status; log: $OUT/load.log)"

log "after the load: until both are back at their minimum (at most ${SETTLE_SECONDS}s)"
settle_end=$(($(date +%s) + SETTLE_SECONDS))
while [ "$(date +%s)" -lt "$settle_end" ]; do
  sample after
  tail -n 1 "$samples" | awk -v a="$api_min" -v w="$worker_min" \
    '$2 == "after" && $3 == a && $4 == a && $5 == w && $6 == w { found = 1 } END { exit !found }' && break
  sleep "$INTERVAL"
done

log "verdict ($(($(date +%s) - start))s in all; samples in $samples)"
check "$samples"
