#!/usr/bin/env bash
# Seed throughput with N workers: one api accepts a seed of zooms 0..MAX_ZOOM, N workers
# (each with THREADS render threads, default 1) render it; prints tiles per second.
# Needs Redis and RabbitMQ running.
# Usage: loadtests/seed-throughput.sh [workers] [max_zoom]      (THREADS=1 by default)
# Gives up (exit 1, with the seed's last status) after DEADLINE seconds (default 600).
source "$(dirname "$0")/common.sh"
workers=${1:-1}
max_zoom=${2:-6}
threads=${THREADS:-1}
deadline=${DEADLINE:-600}
build_release
prefix="loadtest-seed."
forget_prefix "$prefix"
shared=(FRACTILE_REDIS_URL=redis://127.0.0.1:6379 "FRACTILE_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f"
        "FRACTILE_KEY_PREFIX=$prefix" "FRACTILE_QUEUE_PREFIX=$prefix")
start fractile-api 19780 /tmp/fractile-seed-api.log "${shared[@]}" FRACTILE_LISTEN=127.0.0.1:18780 \
  FRACTILE_SEED_TOKEN="$seed_token"
auth="Authorization: Bearer $seed_token"
for i in $(seq 1 "$workers"); do
  start fractile-worker $((19780 + i)) "/tmp/fractile-seed-worker-$i.log" "${shared[@]}" \
    FRACTILE_RENDER_THREADS="$threads" FRACTILE_WORKER_ID="seed-worker-$i"
done

started=$(date +%s.%N)
location=$(curl -fsS --max-time 10 -o /dev/null -w '%header{location}' -H "$auth" -H 'content-type: application/json' \
  -d "{\"min_zoom\": 0, \"max_zoom\": $max_zoom}" http://127.0.0.1:18780/v1/seeds)
give_up=$(($(date +%s) + deadline))
while :; do
  status=$(curl -fsS --max-time 5 -H "$auth" "http://127.0.0.1:18780$location")
  state=$(echo "$status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
  [ "$state" = "done" ] && break
  case "$state" in failed|cancelled|interrupted) echo "seed ended: $status" >&2; exit 1;; esac
  if [ "$(date +%s)" -ge "$give_up" ]; then
    echo "seed not done within ${deadline}s (DEADLINE): $status" >&2
    exit 1
  fi
  sleep 0.25
done
elapsed=$(echo "$(date +%s.%N) - $started" | bc -l)
total=$(echo "$status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
printf 'workers: %s x %s render thread(s); tiles: %s; seconds: %.1f; tiles/s: %.0f\n' \
  "$workers" "$threads" "$total" "$elapsed" "$(echo "$total / $elapsed" | bc -l)"
stop_all
forget_prefix "$prefix"
