#!/usr/bin/env bash
# The scaling-checklist experiments: one A/B (or A/B/C) per checklist item, everything else
# equal, on this machine, in one run. Regenerates loadtests/reports/ (reports, charts, and
# each experiment's README.md with the comparison). About 10 minutes; bounded: every load
# run has a fixed duration and request cap, every process is stopped at the end.
# Needs Redis (6379) and RabbitMQ (5672, guest/guest) running, and wrk, nginx, prometheus
# (Debian) for the load-balancer experiment.
# Usage: loadtests/run-experiments.sh [experiment ...]   (default: all)
#   experiments: caching admission placement balancer priority
# (the hot path against a bare hyper server and nginx: loadtests/hot-path.sh)
source "$(dirname "$0")/common.sh"
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p fractile-loadtest
build_release
reports="$root/loadtests/reports"
load="$bin/fractile-load"
redis=redis://127.0.0.1:6379
amqp='amqp://guest:guest@127.0.0.1:5672/%2f'
experiments=("$@")
[ ${#experiments[@]} -gt 0 ] || experiments=(caching admission placement balancer priority)

# peak_rss_mib PID: the process's peak resident memory.
peak_rss_mib() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# distributed PREFIX: environment for an api or worker using Redis and RabbitMQ under PREFIX.
distributed() { echo "FRACTILE_REDIS_URL=$redis FRACTILE_AMQP_URL=$amqp FRACTILE_KEY_PREFIX=$1 FRACTILE_QUEUE_PREFIX=$1"; }

caching() {
  # Browse traffic on one api rendering in-process; only the cache layers differ.
  local out="$reports/caching" variant env
  rm -rf "$out"
  for variant in l1-l2 l2-only none; do
    local prefix="exp-caching-$variant."
    forget_prefix "$prefix"
    case $variant in
      l1-l2) env="FRACTILE_REDIS_URL=$redis FRACTILE_KEY_PREFIX=$prefix" ;;
      l2-only) env="FRACTILE_REDIS_URL=$redis FRACTILE_KEY_PREFIX=$prefix FRACTILE_L1_BYTES=0" ;;
      none) env="FRACTILE_L1_BYTES=0" ;;
    esac
    # shellcheck disable=SC2086
    start fractile-api 19600 "/tmp/exp-caching-$variant.log" FRACTILE_LISTEN=127.0.0.1:18600 FRACTILE_RENDER_THREADS=2 $env
    "$load" run --target http://127.0.0.1:18600 --scenario browse --rate 150 --seconds 30 --name "$variant" --out "$out/$variant"
    echo "{\"api_peak_rss_mib\": $(peak_rss_mib "${pids[0]}")}" > "$out/$variant/extra.json"
    stop_all
    forget_prefix "$prefix"
  done
  "$load" compare --out "$out" --title "Caching: L1 + L2 against L2 only against none, on browse traffic" \
    --note "One api, 2 render threads, rendering misses itself; browse at 150 tiles/s for 30 s, the same request sequence in each run, cold caches at the start. l1-l2: moka (128 MiB) in front of Redis; l2-only: FRACTILE_L1_BYTES=0; none: no L1, no Redis (every request renders)." \
    "$out/l1-l2" "$out/l2-only" "$out/none"
}

admission() {
  # Three times what one api can render, as new tiles; only admission control differs.
  local out="$reports/admission" variant env
  # Its own runs only: flood/ (loadtests/flood.sh) lives beside them.
  rm -rf "$out/limit-on" "$out/limit-off"
  for variant in limit-on limit-off; do
    case $variant in
      limit-on) env="" ;;
      limit-off) env="FRACTILE_MAX_IN_FLIGHT=1000000 FRACTILE_MAX_PENDING_MISSES=1000000 FRACTILE_RENDER_QUEUE=1000000" ;;
    esac
    # shellcheck disable=SC2086
    start fractile-api 19610 "/tmp/exp-admission-$variant.log" FRACTILE_LISTEN=127.0.0.1:18610 FRACTILE_RENDER_THREADS=2 $env
    "$load" run --target http://127.0.0.1:18610 --scenario cold --rate 900 --seconds 20 --max-in-flight 20000 \
      --offset 0 --name "$variant" --out "$out/$variant"
    echo "{\"api_peak_rss_mib\": $(peak_rss_mib "${pids[0]}")}" > "$out/$variant/extra.json"
    stop_all
  done
  "$load" compare --out "$out" --title "Admission control at 3× overload" \
    --note "One api, 2 render threads, embedded mode; new tiles (all misses) at 900/s for 20 s, about three times what it renders (~300/s). limit-on: the defaults (256 requests in flight, 128 misses pending, 64 renders queued, then 503 + Retry-After at once). limit-off: all three bounds lifted; the 5 s render deadline still applies. Goodput counts 2xx only. The floods, straight at one api and through nginx, are in [flood/](flood/README.md) (loadtests/flood.sh)." \
    "$out/limit-on" "$out/limit-off"
}

placement() {
  # Cached tiles while misses render: where the CPU work runs is the only difference.
  local out="$reports/placement" variant
  rm -rf "$out"
  for variant in executor pool workers; do
    local prefix="exp-placement."
    forget_prefix "$prefix"
    case $variant in
      executor) start fractile-api 19620 /tmp/exp-placement-api.log FRACTILE_LISTEN=127.0.0.1:18620 FRACTILE_RENDER_ON_EXECUTOR=true ;;
      pool) start fractile-api 19620 /tmp/exp-placement-api.log FRACTILE_LISTEN=127.0.0.1:18620 FRACTILE_RENDER_THREADS=2 ;;
      workers)
        # shellcheck disable=SC2046
        start fractile-worker 19621 /tmp/exp-placement-worker.log $(distributed "$prefix") FRACTILE_RENDER_THREADS=2
        # shellcheck disable=SC2046
        start fractile-api 19620 /tmp/exp-placement-api.log $(distributed "$prefix") FRACTILE_LISTEN=127.0.0.1:18620 ;;
    esac
    "$load" run --target http://127.0.0.1:18620 --scenario cold --rate 400 --seconds 20 --name "$variant-misses" \
      --out "$out/$variant-misses" > /dev/null &
    local misses=$!
    "$load" run --target http://127.0.0.1:18620 --scenario hot --rate 500 --seconds 20 --name "$variant" --out "$out/$variant"
    wait "$misses"
    stop_all
    forget_prefix "$prefix"
  done
  "$load" compare --out "$out" --title "Where CPU work runs: cached-tile latency while misses render" \
    --note "Hot (cached) tiles at 500/s measured while new tiles arrive at 400/s (about what 2 threads render) for 20 s, on one api. executor: renders run inside the request handler on tokio's 2 worker threads (FRACTILE_RENDER_ON_EXECUTOR, deliberately wrong); pool: the bounded render pool (2 threads); workers: renders go over RabbitMQ to a worker process (2 threads). The table shows the hot tiles; the misses' own reports are in *-misses/." \
    "$out/executor" "$out/pool" "$out/workers"
}

balancer() {
  # Hot tiles through nginx to one or three api replicas (the local topology).
  local out="$reports/balancer" apis
  rm -rf "$out"
  for apis in 1 3; do
    FRACTILE_LOCAL_RUN=/tmp/exp-balancer-$apis FRACTILE_LOCAL_APIS=$apis FRACTILE_LOCAL_PORT=18630 \
      FRACTILE_LOCAL_PROMETHEUS_PORT=19630 "$root/deploy/local/start.sh" > /dev/null
    "$load" run --target http://127.0.0.1:18630 --scenario hot --rate 6000 --seconds 20 --max-in-flight 4000 \
      --name "$apis-replica$([ "$apis" = 1 ] || echo s)" --out "$out/$apis-replicas"
    FRACTILE_LOCAL_RUN=/tmp/exp-balancer-$apis "$root/deploy/local/stop.sh" > /dev/null
  done
  "$load" compare --out "$out" --title "Load balancer: one api replica against three, on 2 cores" \
    --note "nginx (least_conn, keepalive) in front of 1 or 3 api replicas of the local topology; hot tiles at 6000/s for 20 s. Everything (generator, nginx, replicas, Redis, RabbitMQ, workers, Prometheus) shares the same 2 cores." \
    "$out/1-replicas" "$out/3-replicas"
}

priority() {
  # Interactive misses while a big seed runs: separate queue and lane, or one FIFO.
  local out="$reports/priority" variant env
  rm -rf "$out"
  for variant in priority no-priority; do
    local prefix="exp-priority-$variant."
    forget_prefix "$prefix"
    env=""
    [ "$variant" = no-priority ] && env="FRACTILE_PRIORITY=false"
    # shellcheck disable=SC2046,SC2086
    start fractile-worker 19641 "/tmp/exp-priority-worker.log" $(distributed "$prefix") FRACTILE_RENDER_THREADS=2 $env
    env=""
    [ "$variant" = no-priority ] && env="FRACTILE_QUEUE_PRIORITY=false"
    # shellcheck disable=SC2046,SC2086
    start fractile-api 19640 "/tmp/exp-priority-api.log" $(distributed "$prefix") FRACTILE_LISTEN=127.0.0.1:18640 \
      FRACTILE_SEED_TOKEN="$seed_token" $env
    FRACTILE_SEED_TOKEN="$seed_token" "$load" run --target http://127.0.0.1:18640 --scenario seed-while-browsing --seed-max-zoom 8 --rate 60 --seconds 30 \
      --name "$variant" --out "$out/$variant"
    stop_all
    forget_prefix "$prefix"
  done
  "$load" compare --out "$out" --title "Queue priority: interactive misses during a big seed" \
    --note "api + one worker (2 render threads) over RabbitMQ; a seed of zooms 0-8 (87,381 tiles) starts, then browse traffic at 60 tiles/s for 30 s (the seed is cancelled at the end). priority: interactive jobs in their own queue and taken first by the worker's threads; no-priority: interactive jobs published to the seed queue and one first-come-first-served lane (FRACTILE_QUEUE_PRIORITY=false, FRACTILE_PRIORITY=false). MISS latency is the interactive render path; 503s are misses that passed their 5 s deadline." \
    "$out/priority" "$out/no-priority"
}

for experiment in "${experiments[@]}"; do
  echo "=== $experiment ($(date +%T))"
  case $experiment in
    caching | admission | placement | balancer | priority) "$experiment" ;;
    *) echo "unknown experiment $experiment" >&2; exit 2 ;;
  esac
done
echo "=== done ($(date +%T)); reports in $reports"
