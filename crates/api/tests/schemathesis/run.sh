#!/usr/bin/env bash
# Runs schemathesis against the api and a worker in distributed mode: the debug binaries on
# free loopback ports, against the local Redis and RabbitMQ under a key and queue prefix of
# their own, with a seed token. The traffic operations are tested on the traffic port, the
# admin ones on the admin port; every check (but one, below), the examples, coverage and
# fuzzing phases, and the stateful phase (the seed links: POST 202 -> GET / DELETE). A
# fixed seed and a bounded number of examples keep the run reproducible and short;
# everything started is stopped on exit. Needs: cargo, python3 (venv), Redis on
# 127.0.0.1:6379, RabbitMQ on 127.0.0.1:5672.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../.." && pwd)
version=4.32.5
venv=${SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fractile-schemathesis-$version}
redis_url=${SCHEMATHESIS_REDIS_URL:-redis://127.0.0.1:6379}
amqp_url=${SCHEMATHESIS_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
seed=${SCHEMATHESIS_SEED:-20261129}
examples=${SCHEMATHESIS_MAX_EXAMPLES:-25}

if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi
"$venv/bin/st" --version

cargo build --quiet --locked --manifest-path "$root/Cargo.toml" -p fractile-api -p fractile-worker
target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

# Free loopback ports, chosen by the kernel.
read -r traffic_port admin_port worker_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
run_id=$(python3 -c 'import secrets; print(secrets.token_hex(4))')
token=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
admin_token=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
out=$(mktemp -d "${TMPDIR:-/tmp}/fractile-schemathesis.XXXXXX")

export FRACTILE_REDIS_URL=$redis_url FRACTILE_AMQP_URL=$amqp_url
export FRACTILE_KEY_PREFIX="schemathesis-$run_id:" FRACTILE_QUEUE_PREFIX="schemathesis-$run_id."
# /faults takes changes, so its 200s and 400s are tested too; the admin ports are tested
# after the traffic port, and whatever is injected lifts when the processes stop.
export FRACTILE_FAULT_INJECTION=true FRACTILE_ADMIN_TOKEN=$admin_token
# Seeds stay cheap: at most zoom 3 (85 tiles for everything), small quotas.
FRACTILE_LISTEN=127.0.0.1:$traffic_port FRACTILE_ADMIN_LISTEN=127.0.0.1:$admin_port \
  FRACTILE_SEED_TOKEN=$token FRACTILE_MAX_ZOOM=3 FRACTILE_SEED_MAX_QUEUED_TILES=200 \
  FRACTILE_SHUTDOWN_DELAY=0s FRACTILE_LOG_FORMAT=json \
  "$target_dir/debug/fractile-api" > "$out/api.log" 2>&1 &
api=$!
FRACTILE_ADMIN_LISTEN=127.0.0.1:$worker_port FRACTILE_LOG_FORMAT=json \
  "$target_dir/debug/fractile-worker" > "$out/worker.log" 2>&1 &
worker=$!
# shellcheck disable=SC2317  # run by the EXIT trap
stop() {
  kill -TERM "$api" "$worker" 2> /dev/null || true
  wait "$api" "$worker" 2> /dev/null || true
  # The run's queues and keys go with it.
  for q in render.interactive.v2 render.bulk render.dead.v2 render.dead; do
    rabbitmqctl --quiet delete_queue "schemathesis-$run_id.$q" > /dev/null 2>&1 || true
  done
  # rabbitmqctl has no delete_exchange; this is what it would call (best effort).
  rabbitmqctl --quiet eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, \
    <<\"schemathesis-$run_id.render.dlx\">>), false, <<\"cli\">>)." > /dev/null 2>&1 || true
  redis-cli -u "$redis_url" --scan --pattern "schemathesis-$run_id:*" 2> /dev/null \
    | xargs -r redis-cli -u "$redis_url" del > /dev/null 2>&1 || true
}
trap stop EXIT

for port in "$admin_port" "$worker_port"; do
  for _ in $(seq 1 150); do
    curl -fsS "http://127.0.0.1:$port/readyz" > /dev/null 2>&1 && break
    if ! kill -0 "$api" 2> /dev/null || ! kill -0 "$worker" 2> /dev/null; then
      tail -n 20 "$out"/*.log
      echo "the api or the worker exited" >&2
      exit 1
    fi
    sleep 0.2
  done
done

# Run from the scratch directory: schemathesis and Hypothesis leave caches in the working
# directory.
st() (
  cd "$out"
  timeout 240 "$venv/bin/st" --no-color --config-file "$here/schemathesis.toml" run --seed "$seed" --max-examples "$examples" --checks all \
    --request-timeout 15 --workers 1 \
    --suppress-health-check too_slow --warnings off "$@"
)
status=0
echo "--- traffic port (tags tiles, seeds, viewer, metadata)"
# Every check but one: `DELETE /v1/seeds/{id}` cancels a seed, it does not remove it. The
# seed stays readable, in state `cancelled`, so an operator sees what was cancelled and how
# far it got (README, "Distributed mode"): a 200 for it after the DELETE is the contract, which
# `use_after_free` would report. (The only other DELETE, `/faults`, is on the admin port.)
st "http://127.0.0.1:$traffic_port/openapi.json" --exclude-tag admin \
  --phases examples,coverage,fuzzing,stateful --exclude-checks use_after_free \
  -H "Authorization: Bearer $token" || status=$?
# The admin operations have no links: no stateful phase there.
for port in "$admin_port" "$worker_port"; do
  echo "--- admin port $port (tag admin; $([ "$port" = "$admin_port" ] && echo api || echo worker))"
  st "$root/crates/api/openapi.json" --url "http://127.0.0.1:$port" --include-tag admin \
    --phases examples,coverage,fuzzing -H "Authorization: Bearer $admin_token" || status=$?
done
if [ "$status" -ne 0 ]; then
  echo "schemathesis failed; the servers' logs are in $out" >&2
else
  rm -rf "$out"
fi
exit "$status"
