#!/usr/bin/env bash
# Records what autoscalers read while the local topology (deploy/local: nginx, 3 apis,
# 2 workers with one render thread each, Redis, RabbitMQ) takes browse traffic that rises,
# holds, falls and idles: in-flight requests and CPU per api, the render queues' ready and
# unacknowledged messages, renders per worker, once a second. Writes series.json (for the
# autoscaler model, k8s/autoscaling-model), machine-cpu.json and the generator's report into
# loadtests/reports/autoscaling/recording/. About 5 minutes plus the build; bounded by the
# profile; everything it starts is stopped on exit (logs stay in $FRACTILE_LOCAL_RUN).
#
# Run it alone on the machine, serialized with other measurements:
#   flock /tmp/fractile-measure.lock loadtests/autoscaling/record.sh
# FRACTILE_RECORD_PROFILE overrides the arrival profile (seconds:tile-requests-per-second).
# Needs what deploy/local/start.sh needs, and RabbitMQ's management plugin (enabled here,
# on 127.0.0.1 only, and disabled again at the end if it was not enabled before).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/fractile-target}
# Off the default ports and run folder, like .ci/run, so a developer's stack is not in the way.
export FRACTILE_LOCAL_PORT=${FRACTILE_LOCAL_PORT:-18890}
export FRACTILE_LOCAL_PROMETHEUS_PORT=${FRACTILE_LOCAL_PROMETHEUS_PORT:-19290}
export FRACTILE_LOCAL_RUN=${FRACTILE_LOCAL_RUN:-/tmp/fractile-autoscaling-record}
export FRACTILE_LOCAL_APIS=3
# Idle 30 s, rise for 45 s, hold 30 s, fall for 60 s, idle 135 s. README.md says why.
profile=${FRACTILE_RECORD_PROFILE:-0:40,30:40,75:900,105:900,165:40,300:40}
out=$root/loadtests/reports/autoscaling/recording
run=$FRACTILE_LOCAL_RUN
management_port=15672

set -a
# shellcheck source=/dev/null
source "$root/.env"
set +a

management_enabled_here=false
cleanup() {
  "$root/deploy/local/stop.sh" || true
  if $management_enabled_here; then
    rabbitmq-plugins --quiet disable rabbitmq_management > /dev/null || true
  fi
  echo "logs kept in $run"
}
trap cleanup EXIT

echo "building fractile-load"
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p fractile-loadtest
bin=$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release

# A fresh run folder: start.sh refuses to start over a recorded stack, and old logs would mix.
rm -rf "$run"
"$root/deploy/local/start.sh"

echo "rabbitmq management API on 127.0.0.1:$management_port"
if ! rabbitmq-plugins --quiet list --enabled --minimal | grep -qx rabbitmq_management; then
  # The broker listens on loopback only; keep its management listener there too (the
  # plugin's default is every interface). Set before the plugin starts, for this boot only.
  rabbitmqctl --quiet eval \
    "application:set_env(rabbitmq_management, tcp_config, [{ip, \"127.0.0.1\"}, {port, $management_port}])." > /dev/null
  rabbitmq-plugins --quiet enable rabbitmq_management > /dev/null
  management_enabled_here=true
fi
# The management API answers users tagged `monitoring` (or more); start.sh made the user.
rabbitmqctl --quiet set_user_tags "$RABBITMQ_USER" monitoring > /dev/null
for _ in $(seq 1 100); do
  curl -fsS -o /dev/null -u "$RABBITMQ_USER:$RABBITMQ_PASSWORD" \
    "http://127.0.0.1:$management_port/api/overview" 2> /dev/null && break
  sleep 0.2
done
# The queues exist once a worker consumes; the sampler reads them from the first second.
for q in fractile.render.interactive.v2 fractile.render.bulk; do
  curl -fsS -o /dev/null -u "$RABBITMQ_USER:$RABBITMQ_PASSWORD" \
    "http://127.0.0.1:$management_port/api/queues/fractile-local/$q"
done

# pid_of NAME: a process start.sh recorded (CPU per api comes from /proc/<pid>/stat).
pid_of() { awk -v name="$1" '$1 == name { print $2 }' "$run/pids"; }

rm -rf "$out"
mkdir -p "$out"
echo "load before: $(uptime)"
python3 "$here/sample.py" --out "$out/series.json" --root "$root" \
  --api 127.0.0.1:19081 --api 127.0.0.1:19082 --api 127.0.0.1:19083 \
  --api-pid "$(pid_of api-1)" --api-pid "$(pid_of api-2)" --api-pid "$(pid_of api-3)" \
  --worker 127.0.0.1:19091 --worker 127.0.0.1:19092 --worker-log "$run/worker-1.log" \
  --rabbitmq "http://127.0.0.1:$management_port" --vhost fractile-local \
  -- "$bin/fractile-load" run --target "http://127.0.0.1:$FRACTILE_LOCAL_PORT" \
  --scenario browse --profile "$profile" --max-in-flight 4000 --max-requests 200000 \
  --name autoscaling-recording --out "$out/generator" \
  2> >(tee "$run/sampler.log" >&2)
echo "load after: $(uptime)"
echo "series: $out/series.json"
