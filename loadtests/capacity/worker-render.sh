#!/usr/bin/env bash
# A worker's render rate on the queue path: one fractile-worker with one render thread
# pinned to CPU 1, an api and the generator on CPU 0, cold caches (fresh key and queue
# prefix per scenario). Cold traffic (every request a new zoom-11 tile) above what one
# thread renders, then browse traffic from cold. Reads renders_total and
# render_duration_seconds from the worker's /metrics and its CPU from /proc.
# Needs Redis (6379) and RabbitMQ (5672, guest/guest). Bounded: about 1.5 minutes.
# Usage: loadtests/capacity/worker-render.sh [seconds]      (COLD_RATE, BROWSE_RATE)
# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "$0")/../common.sh"
here="$root/loadtests/capacity"
seconds=${1:-25}
out=${OUT:-/tmp/fractile-capacity-worker}
build_release
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p fractile-loadtest
load="$bin/fractile-load"
ticks=$(getconf CLK_TCK)
rm -rf "$out" && mkdir -p "$out"

for run in "cold:${COLD_RATE:-300}" "browse:${BROWSE_RATE:-300}"; do
  scenario=${run%%:*} rate=${run##*:}
  prefix="capacity-worker-$scenario."
  forget_prefix "$prefix"
  shared=(FRACTILE_REDIS_URL=redis://127.0.0.1:6379 "FRACTILE_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f"
          "FRACTILE_KEY_PREFIX=$prefix" "FRACTILE_QUEUE_PREFIX=$prefix")
  env FRACTILE_ADMIN_LISTEN=127.0.0.1:19921 RUST_LOG=warn "${shared[@]}" FRACTILE_RENDER_THREADS=1 \
    taskset -c 1 "$bin/fractile-worker" > "$out/worker-$scenario.log" 2>&1 &
  pids+=($!)
  worker=$!
  wait_ready 19921
  env FRACTILE_ADMIN_LISTEN=127.0.0.1:19920 RUST_LOG=warn "${shared[@]}" FRACTILE_LISTEN=127.0.0.1:18920 \
    taskset -c 0 "$bin/fractile-api" > "$out/api-$scenario.log" 2>&1 &
  pids+=($!)
  wait_ready 19920
  before=$(cpu_ticks "$worker") started=$(date +%s.%N)
  taskset -c 0 "$load" run --target http://127.0.0.1:18920 --scenario "$scenario" --rate "$rate" \
    --seconds "$seconds" --name "$scenario-$rate" --out "$out/$scenario-$rate" > /dev/null
  after=$(cpu_ticks "$worker") wall=$(echo "$(date +%s.%N) - $started" | bc -l)
  echo "== $scenario at $rate tiles/s for $seconds s, cold caches, 1 worker x 1 render thread on CPU 1"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("generator: sent", r["sent"], "goodput/s %.0f" % r["goodput_per_s"], "status", r["status_mix"], "cache", r["cache_mix"])' \
    "$out/$scenario-$rate/results.json"
  curl -fsS http://127.0.0.1:19921/metrics > "$out/worker-$scenario.metrics"
  python3 "$here/worker-metrics.py" "$wall" "$(echo "($after - $before) / $ticks" | bc -l)" < "$out/worker-$scenario.metrics"
  grep -E '^worker_(deadline_drops|jobs_consumed)_total' "$out/worker-$scenario.metrics" || true
  stop_all
  forget_prefix "$prefix"
done
