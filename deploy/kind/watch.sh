#!/usr/bin/env bash
# Watch fractile scale: a line every 5 s until Ctrl-C (or for WATCH_SECONDS seconds):
#
#   time      api  worker  queue  in-flight/pod  p99
#   12:00:05  2/2     1/1      0            0.4  12 ms
#
# api and worker: ready/desired pods, from the Deployments' status (desired is what the
# autoscaler last set). From Prometheus: queue = messages ready + unacknowledged in both
# render queues (what the worker's autoscaler counts), in-flight/pod = the api pods' average
# http_requests_in_flight, p99 = the api's 99th-percentile request latency over the last
# minute. A value Prometheus does not have (yet) prints as `-`.
#
# Needs kubectl and curl (and awk, sed): no jq, no python.
#
# Prometheus is reached through `kubectl port-forward`, started here on a free loopback port
# and stopped on exit. Not through the API server's service proxy: the proxied connection
# comes from the control-plane node, which the network policies do not let reach Prometheus
# (only Grafana and KEDA may), whereas a port-forward enters the pod's own network namespace.
# WATCH_PROMETHEUS_URL=http://… uses a Prometheus you already reach instead.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/deploy/kind/lib.sh"

INTERVAL=5
WATCH_SECONDS=${WATCH_SECONDS:-0}
Q_IN_FLIGHT='avg(http_requests_in_flight{job="fractile-api"})'
Q_P99='histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job="fractile-api"}[1m])))'
Q_QUEUE='sum(rabbitmq_detailed_queue_messages{queue=~"fractile\\.render\\.(interactive\\.v2|bulk)"})'

case "${1:-}" in
  "") ;;
  -h | --help) usage ;;
  *) die "unknown argument '$1' (try --help)" ;;
esac
case "$WATCH_SECONDS" in
  *[!0-9]* | "") die "WATCH_SECONDS='$WATCH_SECONDS' is not a number of seconds" ;;
esac
command -v curl > /dev/null 2>&1 || die "curl is needed to query Prometheus"
require_cluster

tmp=$(mktemp -d)
pf_pid=""
cleanup() {
  if [ -n "$pf_pid" ]; then kill "$pf_pid" 2> /dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# Starts a port-forward to Prometheus on a port the kernel picks; sets PROM_URL.
start_port_forward() {
  local port=""
  # kubectl itself, not the kc function: a function in the background runs in a subshell,
  # and $! would be that subshell's pid, leaving kubectl running after cleanup's kill.
  kubectl --context "$CONTEXT" -n "$NAMESPACE" port-forward --address 127.0.0.1 svc/prometheus 0:9090 \
    > "$tmp/port-forward.log" 2>&1 &
  pf_pid=$!
  for _ in $(seq 1 50); do
    port=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9][0-9]*\) .*/\1/p' "$tmp/port-forward.log" | head -n 1)
    [ -z "$port" ] || break
    kill -0 "$pf_pid" 2> /dev/null || break
    sleep 0.2
  done
  if [ -z "$port" ]; then
    warn "no port-forward to svc/prometheus ($(head -n 1 "$tmp/port-forward.log" 2> /dev/null)); Prometheus columns will show -"
    kill "$pf_pid" 2> /dev/null || true
    pf_pid=""
    PROM_URL=""
    return 0
  fi
  PROM_URL="http://127.0.0.1:$port"
}

# One instant query; prints the single sample's value, or nothing when Prometheus does not
# answer or has no sample. The value is the second element of "value":[<time>,"<value>"].
query() {
  [ -n "$PROM_URL" ] || return 0
  curl -fsS --max-time 3 -G "$PROM_URL/api/v1/query" --data-urlencode "query=$1" 2> /dev/null |
    sed -n 's/.*"value":[[:space:]]*\[[^],]*,[[:space:]]*"\([^"]*\)"[[:space:]]*\].*/\1/p' || true
}

# number FORMAT SCALE VALUE: the value times SCALE in FORMAT, or "-" when it is not a number
# (missing, NaN, ±Inf: a quantile of no requests is NaN).
number() {
  case "$3" in
    "" | NaN | +Inf | -Inf) printf -- '-' ;;
    *) awk -v v="$3" -v s="$2" -v f="$1" 'BEGIN { printf f, v * s }' ;;
  esac
}

# Deployment NAME from "api=2/3 worker=/1 " (readyReplicas is absent while none is ready).
pods() {
  local word
  for word in $1; do
    case "$word" in
      "$2"=/*) printf '0%s' "${word#"$2"=}" ;;
      "$2"=*) printf '%s' "${word#"$2"=}" ;;
    esac
  done
}

PROM_URL=${WATCH_PROMETHEUS_URL:-}
[ -n "$PROM_URL" ] || start_port_forward

header() { printf '%-8s  %7s  %7s  %6s  %13s  %9s\n' time api worker queue in-flight/pod p99; }
start=$(date +%s)
tick=0
while :; do
  # A port-forward ends when its pod goes (a restart, a reschedule): open a new one.
  if [ -z "${WATCH_PROMETHEUS_URL:-}" ] && { [ -z "$pf_pid" ] || ! kill -0 "$pf_pid" 2> /dev/null; }; then
    start_port_forward
  fi
  [ $((tick % 20)) -ne 0 ] || header
  deployments=$(kc -n "$NAMESPACE" get deployment api worker \
    -o jsonpath='{range .items[*]}{.metadata.name}={.status.readyReplicas}/{.spec.replicas} {end}' 2> /dev/null || true)
  api=$(pods "$deployments" api)
  worker=$(pods "$deployments" worker)
  p99=$(number '%.0f' 1000 "$(query "$Q_P99")")
  [ "$p99" = - ] || p99="$p99 ms"
  printf '%-8s  %7s  %7s  %6s  %13s  %9s\n' \
    "$(date +%H:%M:%S)" "${api:--}" "${worker:--}" \
    "$(number '%.0f' 1 "$(query "$Q_QUEUE")")" \
    "$(number '%.1f' 1 "$(query "$Q_IN_FLIGHT")")" "$p99"
  tick=$((tick + 1))
  now=$(date +%s)
  if [ "$WATCH_SECONDS" -gt 0 ] && [ $((now + INTERVAL - start)) -gt "$WATCH_SECONDS" ]; then break; fi
  # On a 5 s grid from the start, however long the queries took.
  next=$((start + tick * INTERVAL))
  [ "$next" -le "$now" ] || sleep $((next - now))
done
