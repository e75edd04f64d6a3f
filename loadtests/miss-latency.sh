#!/usr/bin/env bash
# Miss latency, rendered in-process (embedded api) against rendered by a worker through
# RabbitMQ and Redis (api + worker): the same sequence of unique tiles, wrk with a few
# connections, both on this machine's loopback. Needs wrk, Redis and RabbitMQ running.
# Usage: loadtests/miss-latency.sh [seconds] [connections]
source "$(dirname "$0")/common.sh"
seconds=${1:-20}
connections=${2:-2}
build_release
prefix="loadtest-miss."
forget_prefix "$prefix"

echo "== in-process: fractile-api, embedded mode, 2 render threads"
start fractile-api 19680 /tmp/fractile-miss-embedded.log FRACTILE_LISTEN=127.0.0.1:18680 FRACTILE_RENDER_THREADS=2
checked_wrk -t1 -c"$connections" -d"${seconds}s" --latency -s "$root/loadtests/unique-tiles.lua" http://127.0.0.1:18680
stop_all

echo "== through the queue: fractile-api + fractile-worker (2 render threads), Redis, RabbitMQ"
shared=(FRACTILE_REDIS_URL=redis://127.0.0.1:6379 "FRACTILE_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f"
        "FRACTILE_KEY_PREFIX=$prefix" "FRACTILE_QUEUE_PREFIX=$prefix")
start fractile-worker 19682 /tmp/fractile-miss-worker.log "${shared[@]}" FRACTILE_RENDER_THREADS=2
start fractile-api 19681 /tmp/fractile-miss-api.log "${shared[@]}" FRACTILE_LISTEN=127.0.0.1:18681
checked_wrk -t1 -c"$connections" -d"${seconds}s" --latency -s "$root/loadtests/unique-tiles.lua" http://127.0.0.1:18681
curl -fsS http://127.0.0.1:19681/metrics | grep -E '^render_jobs_published_total|^cache_requests_total'
stop_all
forget_prefix "$prefix"
