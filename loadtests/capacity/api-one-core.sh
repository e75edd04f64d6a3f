#!/usr/bin/env bash
# One api replica at one core, the unit a pod with limits.cpu: 1 gets: fractile-api pinned
# to CPU 1 with one tokio thread and one render thread, distributed mode (Redis + RabbitMQ),
# one worker (1 render thread) and the generator pinned to CPU 0. Browse traffic at each rate
# of RATES, then hot traffic at each rate of HOT_RATES, SECONDS_EACH seconds each, a fresh
# api (empty L1) per rate. Redis (L2) is warmed first with the same request sequence (the
# generator's seed is fixed): WARM_PASSES passes of WARM_SECONDS at WARM_RATE, and a browse
# run is shortened so it asks for no more tiles than the warm-up did, so misses stay rare
# and what is measured is the api, not the renders. Prints one row per rate: generator
# figures, the api's CPU from /proc, http_requests_in_flight sampled every 200 ms, and the
# api's own mean request time (http_request_duration_seconds sum / count).
# Needs Redis (6379) and RabbitMQ (5672, guest/guest). Bounded: about 6 minutes.
# Usage: loadtests/capacity/api-one-core.sh     (RATES, HOT_RATES, SECONDS_EACH, WARM_* to change)
# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "$0")/../common.sh"
here="$root/loadtests/capacity"
rates=${RATES:-100 400 1600 3200 6400 12800}
hot_rates=${HOT_RATES:-1000 4000 8000 12000 16000 24000}
seconds=${SECONDS_EACH:-20}
warm_rate=${WARM_RATE:-1600} warm_seconds=${WARM_SECONDS:-40} warm_passes=${WARM_PASSES:-3}
out=${OUT:-/tmp/fractile-capacity-api}
build_release
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p fractile-loadtest
load="$bin/fractile-load"
prefix="capacity-api."
forget_prefix "$prefix"
rm -rf "$out" && mkdir -p "$out"
shared=(FRACTILE_REDIS_URL=redis://127.0.0.1:6379 "FRACTILE_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f"
        "FRACTILE_KEY_PREFIX=$prefix" "FRACTILE_QUEUE_PREFIX=$prefix")
ticks=$(getconf CLK_TCK)

# pinned CPU BINARY ADMIN_PORT LOG [VAR=value ...]: like start, on one CPU.
pinned() {
  local cpu=$1 binary=$2 admin=$3 log=$4
  shift 4
  env FRACTILE_ADMIN_LISTEN="127.0.0.1:$admin" RUST_LOG=warn "$@" taskset -c "$cpu" "$bin/$binary" > "$log" 2>&1 &
  pids+=($!)
  wait_ready "$admin"
}

# Warm-up: an unpinned api and a 2-thread worker render the browse sequence into Redis; in
# passes, since misses shed in one (pending-miss bound, render deadline) render in the next.
start fractile-worker 19911 "$out/warm-worker.log" "${shared[@]}" FRACTILE_RENDER_THREADS=2
start fractile-api 19910 "$out/warm-api.log" "${shared[@]}" FRACTILE_LISTEN=127.0.0.1:18910
for pass in $(seq 1 "$warm_passes"); do
  "$load" run --target http://127.0.0.1:18910 --scenario browse --rate "$warm_rate" --seconds "$warm_seconds" \
    --name "warm-$pass" --out "$out/warm-$pass" > /dev/null
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("warm-up pass", sys.argv[2], "status", r["status_mix"], "cache", r["cache_mix"])' \
    "$out/warm-$pass/results.json" "$pass"
done
stop_all

pinned 0 fractile-worker 19901 "$out/worker.log" "${shared[@]}" FRACTILE_RENDER_THREADS=1
worker=${pids[0]}
echo "| scenario rate tiles/s | seconds | sent | dropped by generator | goodput/s | p50 ms | p99 ms | 503 | errors | api cores | 2xx per api CPU-s | in-flight mean | in-flight max | api mean ms | rate x api mean | generator cores | cache mix |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for run in $(for r in $rates; do echo "browse:$r"; done; for r in $hot_rates; do echo "hot:$r"; done); do
  scenario=${run%%:*} rate=${run##*:} length=$seconds
  if [ "$scenario" = browse ]; then
    length=$(( warm_rate * warm_seconds / rate < seconds ? warm_rate * warm_seconds / rate : seconds ))
  fi
  pinned 1 fractile-api 19900 "$out/api-$scenario-$rate.log" "${shared[@]}" FRACTILE_LISTEN=127.0.0.1:18900 \
    TOKIO_WORKER_THREADS=1 FRACTILE_RENDER_THREADS=1
  api=${pids[-1]}
  taskset -c 0 python3 "$here/sample.py" http://127.0.0.1:19900/metrics "$length" > "$out/sample-$scenario-$rate.json" &
  sampler=$!
  before=$(cpu_ticks "$api") started=$(date +%s.%N)
  taskset -c 0 /usr/bin/time -f '%e %U %S' -o "$out/time-$scenario-$rate" \
    "$load" run --target http://127.0.0.1:18900 --scenario "$scenario" --rate "$rate" --seconds "$length" \
    --name "$scenario-$rate" --out "$out/$scenario-$rate" > /dev/null
  after=$(cpu_ticks "$api") wall=$(echo "$(date +%s.%N) - $started" | bc -l)
  wait "$sampler"
  curl -fsS http://127.0.0.1:19900/metrics > "$out/metrics-$scenario-$rate"
  python3 "$here/row.py" "$scenario $rate" "$length" "$out/metrics-$scenario-$rate" "$out/$scenario-$rate/results.json" "$out/sample-$scenario-$rate.json" \
    "$(echo "($after - $before) / $ticks" | bc -l)" "$wall" "$out/time-$scenario-$rate"
  kill -TERM "$api" 2> /dev/null || true
  wait "$api" || true
  pids=("$worker")
done
curl -fsS http://127.0.0.1:19901/metrics | grep -E '^renders_total' || true
stop_all
forget_prefix "$prefix"
