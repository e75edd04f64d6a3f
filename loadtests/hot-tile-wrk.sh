#!/usr/bin/env bash
# Hot-tile throughput of one release fractile-api in embedded mode: wrk hammers a single
# cached tile, and the api's CPU time is read from /proc, so the figure is both requests
# per second and requests per server CPU-second (the load generator shares the machine).
# Usage: loadtests/hot-tile-wrk.sh [seconds] [connections]    (needs wrk: apt-get install wrk)
set -euo pipefail
seconds=${1:-15}
connections=${2:-32}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p fractile-api
target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
port=18580 admin=19580
FRACTILE_LISTEN=127.0.0.1:$port FRACTILE_ADMIN_LISTEN=127.0.0.1:$admin \
  "$target_dir/release/fractile-api" > /tmp/fractile-hot-tile.log 2>&1 &
api=$!
trap 'kill -TERM $api 2>/dev/null; wait $api 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$admin/readyz" > /dev/null 2>&1 && break; sleep 0.1; done

url="http://127.0.0.1:$port/tiles/3/2/3.png"
curl -fsS -o /dev/null "$url"                      # render once: every request after is an L1 hit
bytes=$(curl -fsS "$url" | wc -c)
cpu() { awk '{print $14 + $15}' "/proc/$api/stat"; }  # utime + stime, in clock ticks
ticks=$(getconf CLK_TCK)
before=$(cpu)
out=$(wrk -t1 -c"$connections" -d"${seconds}s" --latency "$url")
after=$(cpu)
echo "$out"
requests=$(echo "$out" | awk '/requests in/ {print $1}')
cpu_seconds=$(echo "($after - $before) / $ticks" | bc -l)
printf '\ntile: %s bytes; cores: %s; api CPU: %.2f s over %s s\n' "$bytes" "$(nproc)" "$cpu_seconds" "$seconds"
printf 'requests per api CPU-second: %.0f\n' "$(echo "$requests / $cpu_seconds" | bc -l)"
