#!/usr/bin/env bash
# The backends per core. Redis: GETs per second of tile-sized values (30 KB and 80 KB) with
# redis-benchmark pinned to CPU 0, and redis-server's CPU over the GET phase from /proc (so
# GETs per Redis CPU-second). RabbitMQ: examples/queue_bench.rs, fractile's own publisher
# (persistent, mandatory, confirms) and a consumer with manual acks on a quorum queue, with
# the broker's CPU per 1000 messages.
# Uses the machine's Redis (6379; keys key:__rand_int__ are deleted after) and RabbitMQ
# (5672, guest/guest; queues capacity-bench.* are deleted after). Bounded: about a minute.
# Usage: loadtests/capacity/backends.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ticks=$(getconf CLK_TCK)
redis=$(redis-cli info server | awk -F: '/^process_id:/ {print $2}' | tr -d '\r')
requests=${REDIS_REQUESTS:-100000}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "| value bytes | clients | GETs/s | redis-server CPU-s | GETs per redis CPU-s | MB/s out |"
echo "| --- | --- | --- | --- | --- | --- |"
for size in 30000 80000; do
  for clients in 1 16; do
    redis-cli set key:__rand_int__ "$(head -c "$size" /dev/zero | tr '\0' x)" > /dev/null
    before=$(cpu_ticks "$redis")
    rps=$(taskset -c 0 redis-benchmark -q -t get -d "$size" -c "$clients" -n "$requests" --csv \
      | awk -F, '/"GET"/ {gsub(/"/, "", $2); print $2}')
    after=$(cpu_ticks "$redis")
    cpu=$(echo "($after - $before) / $ticks" | bc -l)
    printf '| %s | %s | %.0f | %.2f | %.0f | %.0f |\n' "$size" "$clients" "$rps" "$cpu" \
      "$(echo "$requests / $cpu" | bc -l)" "$(echo "$rps * $size / 1000000" | bc -l)"
  done
done
redis-cli del key:__rand_int__ > /dev/null

broker=$(pgrep -o -x beam.smp)
echo
(cd "$here" && CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/fractile-target} \
  cargo build --quiet --release --example queue_bench)
# window:messages:prefetch. One confirm outstanding (a lone miss: every publish waits for
# the quorum write), then 64 (many misses in progress, as under load); consumers at a
# worker's prefetch (2 per render thread) and at 32 (a worker with 16 threads).
for run in 1:2000:2 64:20000:2 64:20000:32; do
  IFS=: read -r window messages prefetch <<< "$run"
  taskset -c 0 "${CARGO_TARGET_DIR:-$HOME/.cache/fractile-target}/release/examples/queue_bench" \
    'amqp://guest:guest@127.0.0.1:5672/%2f' "$broker" "$messages" "$window" "$prefetch" "$ticks"
done
