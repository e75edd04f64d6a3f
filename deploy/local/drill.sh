#!/usr/bin/env bash
# The alert drill: starts the local topology (deploy/local/start.sh) with fault injection on,
# causes each fault and checks that the expressions of the alerts written for it become true
# within a bound and that no other page's does (deploy/local/drill.py says how), then stops
# the topology. Prints the table fault → alert → runbook and writes it to $run/drill-table.md
# (loadtests/reports/drill/README.md holds a run's).
#
# Usage: deploy/local/drill.sh [FAULT...]   (default: all six, about 8 minutes;
#   errors latency no-workers redis-paused broker-stopped overload)
# It stops and starts RabbitMQ's app (broker-stopped): run it where nothing else uses the
# machine's broker. Ports as start.sh's, moved with the same variables.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
run=${FRACTILE_LOCAL_RUN:-/tmp/fractile-local}
export FRACTILE_LOCAL_FAULTS=on
lb=http://127.0.0.1:${FRACTILE_LOCAL_PORT:-8080}
prometheus_port=${FRACTILE_LOCAL_PROMETHEUS_PORT:-9090}
"$root/deploy/local/start.sh"
trap '"$root/deploy/local/stop.sh" > /dev/null' EXIT
# shellcheck source=/dev/null
set -a; source "$root/.env"; set +a
python3 "$root/deploy/local/drill.py" "$run" "$prometheus_port" "$lb" "$run/drill-table.md" "$@"
