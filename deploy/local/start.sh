#!/usr/bin/env bash
# The compose topology as local processes on loopback, for machines without Docker:
#
#   nginx 127.0.0.1:8080 ─► api ×3 (18081-18083, admin 19081-19083) ─► redis 127.0.0.1:6391
#                                      ├─► redis-state 127.0.0.1:6392 (seed records)
#                                      └─► rabbitmq (vhost fractile-local) ─► worker ×2 (admin 19091-19092)
#   nginx ─► edge log ─► mtail 127.0.0.1:3903: the edge's responses, as metrics
#   prometheus 127.0.0.1:9090 scrapes them all, with the stack's alert rules, and sends
#   alerts to alertmanager 127.0.0.1:9093, which routes them to the alert log 127.0.0.1:9095
#   ($run/alert-log.log: one JSON line per page or ticket, with its runbook).
#
# FRACTILE_LOCAL_APIS and FRACTILE_LOCAL_WORKERS set the number of api replicas (default 3)
# and workers (default 2); FRACTILE_LOCAL_PORT, FRACTILE_LOCAL_PROMETHEUS_PORT and
# FRACTILE_LOCAL_RUN move the ports and the run folder (FRACTILE_LOCAL_ALERTMANAGER_PORT and
# FRACTILE_LOCAL_ALERT_LOG_PORT and FRACTILE_LOCAL_MTAIL_PORT too). For before/after
# measurements,
# FRACTILE_LOCAL_BIN runs the binaries in that folder instead of building this tree's, and
# FRACTILE_LOCAL_NGINX takes nginx.conf, upstream.compose.conf and v1.*.conf from that
# folder instead of deploy/nginx/.
# NGINX_V1_ROUTES=open lets nginx route the operator routes under /v1/ (seeds) to the api, as
# in the compose stack (default: .env's value, `closed`: 403 at nginx); the api replicas take
# SEED_TOKEN from .env as their seed routes' bearer token.
# FRACTILE_LOCAL_FAULTS=on turns fault injection on in every api and worker, for a drill or a
# chaos test: /faults on their admin ports then takes changes with ADMIN_TOKEN from .env as
# `Authorization: Bearer`. Off by default, as in compose and k8s.
# Tracing: the OpenTelemetry variables of the caller's environment (OTEL_EXPORTER_OTLP_ENDPOINT,
# OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG, OTEL_RESOURCE_ATTRIBUTES, ... every OTEL_*
# name) reach every api and worker as they are, and only those: none is taken from .env,
# whose values are the compose stack's. Unset, the binaries export nothing. With a collector
# or a Jaeger all-in-one listening for OTLP/HTTP on this machine:
#   OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 deploy/local/start.sh
# Leave OTEL_SERVICE_NAME unset: the api and the workers default to their own names.
# It uses the same nginx.conf, prometheus.yml and alerts.yml as the compose stack; only the
# upstream servers and scrape targets (hostnames) are generated for loopback. Redis runs as a
# private instance with the compose stack's settings; RabbitMQ is the machine's broker (it is
# started if it is not running) with a vhost of its own. Credentials come from .env.
# Needs Debian's nginx, mtail, prometheus, prometheus-alertmanager, redis-server and
# rabbitmq-server.
# Stop with stop.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
run=${FRACTILE_LOCAL_RUN:-/tmp/fractile-local}
lb_port=${FRACTILE_LOCAL_PORT:-8080}
prometheus_port=${FRACTILE_LOCAL_PROMETHEUS_PORT:-9090}
alertmanager_port=${FRACTILE_LOCAL_ALERTMANAGER_PORT:-9093}
alert_log_port=${FRACTILE_LOCAL_ALERT_LOG_PORT:-9095}
mtail_port=${FRACTILE_LOCAL_MTAIL_PORT:-3903}   # mtail's metrics (the edge's responses)
redis_port=${FRACTILE_LOCAL_REDIS_PORT:-6391}
state_redis_port=${FRACTILE_LOCAL_STATE_REDIS_PORT:-6392}
apis=${FRACTILE_LOCAL_APIS:-3}   # api replicas (1-9); the load-balancer experiment uses 1
workers=${FRACTILE_LOCAL_WORKERS:-2}   # workers (1-9)
vhost=${FRACTILE_LOCAL_VHOST:-fractile-local}   # the RabbitMQ vhost, deleted by stop.sh

if [ -s "$run/pids" ]; then
  echo "a local stack seems to run already ($run/pids); stop it with deploy/local/stop.sh" >&2
  exit 1
fi
mkdir -p "$run"/{nginx,prometheus,alertmanager,mtail}
# The shell's NGINX_V1_ROUTES wins over .env's, as with docker compose.
v1_routes=${NGINX_V1_ROUTES:-}
# The caller's OTEL_* settings, as NAME=VALUE for `env` below (an empty list without any).
otel=()
while IFS= read -r name; do otel+=("$name=${!name}"); done < <(compgen -e | grep '^OTEL_' || true)
# shellcheck source=/dev/null
set -a; source "$root/.env"; set +a
# Whatever OTEL_* .env set is the compose stack's (a collector name only compose resolves).
while IFS= read -r name; do unset "$name"; done < <(compgen -e | grep '^OTEL_' || true)
v1_routes=${v1_routes:-${NGINX_V1_ROUTES:-closed}}
case "$v1_routes" in
  open | closed) ;;
  *) echo "NGINX_V1_ROUTES='$v1_routes': use open or closed" >&2; exit 1 ;;
esac

nginx_dir=${FRACTILE_LOCAL_NGINX:-$root/deploy/nginx}
if [ -n "${FRACTILE_LOCAL_BIN:-}" ]; then
  bin=$FRACTILE_LOCAL_BIN
  echo "binaries from $bin"
else
  echo "building release binaries"
  cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p fractile-api -p fractile-worker
  bin=$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release
fi

# record NAME PID: remembered for stop.sh.
record() { echo "$1 $2" >> "$run/pids"; }

# wait_http NAME URL: until it answers 2xx (at most 60 s).
wait_http() {
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "$2" 2> /dev/null && return 0
    sleep 0.1
  done
  echo "$1 did not come up ($2); logs in $run" >&2
  exit 1
}

echo "redis on 127.0.0.1:$redis_port"
# The compose stack's Redis settings: a cache (bounded, LRU, nothing on disk), default user
# off, the app's user without dangerous commands.
redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$run" --maxmemory 256mb \
  --maxmemory-policy allkeys-lru --save "" --appendonly no \
  --user default off --user fractile on ">$REDIS_PASSWORD" "~*" "&*" "+@all" "-@dangerous" \
  > "$run/redis.log" 2>&1 &
record redis $!

echo "redis-state on 127.0.0.1:$state_redis_port"
# The compose stack's state store: seed records never evicted (a full store refuses writes),
# kept in an append-only file in the run folder. It starts empty, as the vhost does (stop.sh
# deletes it, and the seeds' jobs with it): no seed outlives the jobs that would finish it.
rm -rf "$run/redis-state"
mkdir -p "$run/redis-state"
redis-server --bind 127.0.0.1 --port "$state_redis_port" --dir "$run/redis-state" --maxmemory 64mb \
  --maxmemory-policy noeviction --appendonly yes --appendfsync everysec --save "" \
  --user default off --user fractile on ">$REDIS_PASSWORD" "~*" "&*" "+@all" "-@dangerous" \
  > "$run/redis-state.log" 2>&1 &
record redis-state $!

echo "rabbitmq vhost $vhost"
if ! rabbitmqctl --quiet status > /dev/null 2>&1; then
  rabbitmq-server -detached
  echo started > "$run/rabbitmq-started-here"
fi
timeout 120 rabbitmqctl --quiet await_startup
# The vhost is the stack's own (stop.sh deletes it); the user only if it is created here.
rabbitmqctl --quiet add_vhost "$vhost" > /dev/null 2>&1 || true
if rabbitmqctl --quiet add_user "$RABBITMQ_USER" "$RABBITMQ_PASSWORD" > /dev/null 2>&1; then
  echo "$RABBITMQ_USER" > "$run/rabbitmq-user-created-here"
else
  rabbitmqctl --quiet change_password "$RABBITMQ_USER" "$RABBITMQ_PASSWORD" > /dev/null
fi
rabbitmqctl --quiet set_permissions -p "$vhost" "$RABBITMQ_USER" ".*" ".*" ".*" > /dev/null

for port in "$redis_port" "$state_redis_port"; do
  for _ in $(seq 1 100); do
    redis-cli -p "$port" --user fractile --pass "$REDIS_PASSWORD" --no-auth-warning ping > /dev/null 2>&1 && break
    sleep 0.1
  done
done

common=(FRACTILE_REDIS_URL="redis://fractile:$REDIS_PASSWORD@127.0.0.1:$redis_port"
        FRACTILE_STATE_REDIS_URL="redis://fractile:$REDIS_PASSWORD@127.0.0.1:$state_redis_port"
        FRACTILE_TILE_MAC_KEY="$TILE_MAC_KEY"
        FRACTILE_AMQP_URL="amqp://$RABBITMQ_USER:$RABBITMQ_PASSWORD@127.0.0.1:5672/$vhost"
        FRACTILE_LOG_FORMAT=json FRACTILE_RENDER_THREADS=1)
case "${FRACTILE_LOCAL_FAULTS:-off}" in
  on) common+=(FRACTILE_FAULT_INJECTION=true FRACTILE_ADMIN_TOKEN="$ADMIN_TOKEN")
      echo "fault injection on: /faults on the admin ports wants Authorization: Bearer \$ADMIN_TOKEN (.env)" ;;
  off) ;;
  *) echo "FRACTILE_LOCAL_FAULTS must be on or off" >&2; exit 2 ;;
esac
if [ ${#otel[@]} -gt 0 ]; then
  echo "tracing settings passed to the api and the workers: ${otel[*]%%=*}"
fi
api_only=(FRACTILE_SEED_TOKEN="$SEED_TOKEN")
for i in $(seq 1 "$apis"); do
  env "${common[@]}" "${otel[@]}" "${api_only[@]}" FRACTILE_LISTEN="127.0.0.1:1808$i" FRACTILE_ADMIN_LISTEN="127.0.0.1:1908$i" \
    "$bin/fractile-api" > "$run/api-$i.log" 2>&1 &
  record "api-$i" $!
done
for i in $(seq 1 "$workers"); do
  env "${common[@]}" "${otel[@]}" FRACTILE_ADMIN_LISTEN="127.0.0.1:1909$i" FRACTILE_WORKER_ID="worker-$i" \
    "$bin/fractile-worker" > "$run/worker-$i.log" 2>&1 &
  record "worker-$i" $!
done
for i in $(seq 1 "$apis"); do wait_http "api-$i" "http://127.0.0.1:1908$i/readyz"; done
for i in $(seq 1 "$workers"); do wait_http "worker-$i" "http://127.0.0.1:1909$i/readyz"; done

echo "mtail on 127.0.0.1:$mtail_port (nginx's edge log $run/nginx/edge.log)"
cp "$root/deploy/mtail/edge.mtail" "$run/mtail/"
: > "$run/nginx/edge.log"
mtail -progs "$run/mtail" -logs "$run/nginx/edge.log" -address 127.0.0.1 -port "$mtail_port" \
  -emit_prog_label=false -logtostderr > "$run/mtail.log" 2>&1 &
record mtail $!
wait_http mtail "http://127.0.0.1:$mtail_port/metrics"

echo "nginx on 127.0.0.1:$lb_port (/v1/ $v1_routes)"
# Same nginx.conf; listen on loopback only, an upstream of loopback ports instead of DNS, and
# the edge log in the run folder, for this stack's mtail.
grep -q ' /var/log/nginx/edge/edge.log ' "$nginx_dir/nginx.conf" \
  || echo "no edge log (/var/log/nginx/edge/edge.log) in $nginx_dir/nginx.conf: the edge's metrics stay at 0" >&2
sed -e "s/listen 8080;/listen 127.0.0.1:$lb_port;/" \
  -e "s# /var/log/nginx/edge/edge.log # $run/nginx/edge.log #" \
  "$nginx_dir/nginx.conf" > "$run/nginx/nginx.conf"
cp "$nginx_dir/v1.$v1_routes.conf" "$run/nginx/v1.conf"
# The compose upstream with loopback servers in place of Docker's DNS name (and its
# resolver), each with the compose server's parameters: one file decides how nginx treats
# the replicas in both stacks.
compose_upstream="$nginx_dir/upstream.compose.conf"
grep -q '^ *server api:8080 resolve' "$compose_upstream" \
  || { echo "no 'server api:8080 resolve ...;' line in $compose_upstream" >&2; exit 1; }
params=$(sed -n 's/^ *server api:8080 resolve\(.*\);$/\1/p' "$compose_upstream")
servers=$(for i in $(seq 1 "$apis"); do printf '    server 127.0.0.1:1808%s%s;\n' "$i" "$params"; done)
{
  echo "# Generated by deploy/local/start.sh from deploy/nginx/upstream.compose.conf: loopback servers."
  SERVERS="$servers" awk '/^resolver /{next} /^ *server api:8080 resolve/{print ENVIRON["SERVERS"]; next} {print}' "$compose_upstream"
} > "$run/nginx/upstream.conf"
nginx -t -q -p "$run/nginx" -c "$run/nginx/nginx.conf" -g "pid $run/nginx.pid;"
nginx -p "$run/nginx" -c "$run/nginx/nginx.conf" -g "daemon off; pid $run/nginx.pid;" > "$run/nginx.log" 2>&1 &
record nginx $!
wait_http nginx "http://127.0.0.1:$lb_port/nginx-health"

echo "alertmanager on 127.0.0.1:$alertmanager_port, alert log on 127.0.0.1:$alert_log_port"
ALERT_LOG_HOST=127.0.0.1 python3 "$root/deploy/alertmanager/alert-log.py" "$alert_log_port" \
  > "$run/alert-log.log" 2>&1 &
record alert-log $!
# The stack's routes and inhibitions; only the receivers' address is this machine's.
sed "s#http://alert-log:9095/#http://127.0.0.1:$alert_log_port/#" \
  "$root/deploy/alertmanager/alertmanager.yml" > "$run/alertmanager/alertmanager.yml"
prometheus-alertmanager --config.file="$run/alertmanager/alertmanager.yml" \
  --storage.path="$run/alertmanager/data" --cluster.listen-address= \
  --web.listen-address="127.0.0.1:$alertmanager_port" > "$run/alertmanager.log" 2>&1 &
record alertmanager $!
wait_http alertmanager "http://127.0.0.1:$alertmanager_port/-/ready"

echo "prometheus on 127.0.0.1:$prometheus_port"
cp "$root/deploy/prometheus/alerts.yml" "$root/deploy/prometheus/slo-rules.yml" "$run/prometheus/"
python3 "$root/deploy/local/targets.py" "$root/deploy/prometheus/prometheus.yml" \
  fractile-api="$(seq -s, -f '127.0.0.1:1908%g' 1 "$apis")" \
  fractile-worker="$(seq -s, -f '127.0.0.1:1909%g' 1 "$workers")" \
  fractile-edge="127.0.0.1:$mtail_port" \
  prometheus="127.0.0.1:$prometheus_port" alertmanager="127.0.0.1:$alertmanager_port" \
  > "$run/prometheus/prometheus.yml"
prometheus --config.file="$run/prometheus/prometheus.yml" --storage.tsdb.path="$run/prometheus/data" \
  --web.listen-address="127.0.0.1:$prometheus_port" > "$run/prometheus.log" 2>&1 &
record prometheus $!
wait_http prometheus "http://127.0.0.1:$prometheus_port/-/ready"

cat <<DONE
fractile is up:
  map         http://127.0.0.1:$lb_port/
  prometheus  http://127.0.0.1:$prometheus_port/
  logs        $run/*.log
stop it with deploy/local/stop.sh
DONE
