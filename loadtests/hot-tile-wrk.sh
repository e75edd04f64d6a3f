#!/usr/bin/env bash
# Hot-tile throughput of one release fractile-api in embedded mode: wrk hammers a single
# cached tile, and the api's CPU time is read from /proc, so the figure is both requests
# per second and requests per server CPU-second (the load generator shares the machine).
# Usage: loadtests/hot-tile-wrk.sh [seconds] [connections]    (needs wrk: apt-get install wrk)
source "$(dirname "$0")/common.sh"
seconds=${1:-15}
connections=${2:-32}
build_release
port=18580
start fractile-api 19580 /tmp/fractile-hot-tile.log FRACTILE_LISTEN=127.0.0.1:$port
api=${pids[0]}

url="http://127.0.0.1:$port/tiles/3/2/3.png"
curl -fsS -o /dev/null "$url"                      # render once: every request after is an L1 hit
bytes=$(curl -fsS "$url" | wc -c)
ticks=$(getconf CLK_TCK)
before=$(cpu_ticks "$api")
out=$(checked_wrk -t1 -c"$connections" -d"${seconds}s" --latency "$url")
after=$(cpu_ticks "$api")
echo "$out"
requests=$(echo "$out" | awk '/requests in/ {print $1}')
cpu_seconds=$(echo "($after - $before) / $ticks" | bc -l)
printf '\ntile: %s bytes; cores: %s; api CPU: %.2f s over %s s\n' "$bytes" "$(nproc)" "$cpu_seconds" "$seconds"
printf 'requests per api CPU-second: %.0f\n' "$(echo "$requests / $cpu_seconds" | bc -l)"
