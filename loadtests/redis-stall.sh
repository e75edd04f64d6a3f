#!/usr/bin/env bash
# Redis stalling under the api: a private redis-server is paused (SIGSTOP: its connections
# stay open, nothing answers) for a while, then resumed. For each pool size, the api (Redis
# only: L2 and local renders) first opens that many pooled connections (as many distinct
# misses at once, while Redis holds commands for 200 ms), then this prints the first request during the pause, /readyz during the
# pause, and the first request and /readyz after the resume.
# Usage: loadtests/redis-stall.sh [pause seconds] [pool size...]   (default: 15 16 32)
# BIN_DIR=dir uses the binaries in dir instead of building release ones.
source "$(dirname "$0")/common.sh"
pause_s=${1:-15}
shift || true
pools=("$@")
[ ${#pools[@]} -gt 0 ] || pools=(16 32)
if [ -n "${BIN_DIR:-}" ]; then bin=$BIN_DIR; else build_release; fi

redis_port=19690 admin=19691 traffic=18691
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no > /dev/null &
redis_pid=$!
# Never leave the private Redis stopped, whatever happens.
trap 'kill -CONT $redis_pid 2>/dev/null; kill $redis_pid 2>/dev/null; stop_all' EXIT
until redis-cli -p "$redis_port" ping > /dev/null 2>&1; do sleep 0.1; done

request() { # request PATH: "status seconds"
  curl -s -o /dev/null -m 30 -w '%{http_code} %{time_total}s' "http://127.0.0.1:$traffic$1"
}
readyz() { # the /readyz body and its time
  curl -s -m 30 -w ' %{time_total}s' "http://127.0.0.1:$admin/readyz"
}

for pool in "${pools[@]}"; do
  echo "== pool of $pool, Redis paused for ${pause_s}s"
  start fractile-api "$admin" "/tmp/fractile-stall-$pool.log" FRACTILE_LISTEN="127.0.0.1:$traffic" \
    FRACTILE_REDIS_URL="redis://127.0.0.1:$redis_port" FRACTILE_REDIS_POOL_SIZE="$pool" \
    FRACTILE_KEY_PREFIX="stall-$pool:" FRACTILE_SHUTDOWN_DELAY=0s
  # Redis holds every command for 200 ms (less than any timeout): the misses overlap, and
  # each takes a connection of its own.
  redis-cli -p "$redis_port" client pause 200 all > /dev/null
  for x in $(seq 0 $((pool - 1))); do
    printf 'url = "http://127.0.0.1:%s/tiles/10/%s/5.png"\noutput = "/dev/null"\n' "$traffic" "$x"
  done | curl -s --no-progress-meter -Z --parallel-immediate --parallel-max "$pool" -K -
  # Slow warm-up lookups may have opened the breaker: start from a closed one.
  for _ in $(seq 1 50); do
    readyz | grep -q '"redis_breaker":"open"' || break
    sleep 0.1
  done
  echo "pooled connections: $(curl -s "http://127.0.0.1:$admin/metrics" | awk '/^redis_pool_connections /{print $2}')"
  kill -STOP "$redis_pid"
  paused=$(date +%s.%N)
  echo "first request during the pause: $(request /tiles/3/1/1.png)"
  echo "readyz during the pause:        $(readyz)"
  sleep 2
  echo "readyz 2 s later:                $(readyz)"
  echo "next request:                    $(request /tiles/3/2/1.png)"
  left=$(python3 -c "print(max(0.0, $pause_s - ($(date +%s.%N) - $paused)))")
  sleep "$left"
  kill -CONT "$redis_pid"
  echo "first request after the resume:  $(request /tiles/3/3/1.png)"
  echo "readyz after the resume:         $(readyz)"
  sleep 2
  echo "readyz 2 s after the resume:     $(readyz)"
  stop_all
done
