#!/usr/bin/env bash
# User-space instructions per L1 hit under callgrind, the method of
# loadtests/reports/hot-path/profile.md: the release api in embedded mode with JSON logs at
# `info` (as deployed), the tile 3/3/3 in L1, then instrumentation on for `wrk -t1 -c8 -d10s`
# on it; total instructions divided by the requests wrk counted. Repeatable for the same
# binary whatever else the machine does, so a change's cost shows without timing noise.
# Usage: loadtests/instructions-per-hit.sh [API_BINARY ...]   (default: this tree's build)
# Needs valgrind and wrk (Debian).
source "$(dirname "$0")/common.sh"
apis=("$@")
if [ ${#apis[@]} -eq 0 ]; then
  build_release
  apis=("$bin/fractile-api")
fi
tile=/tiles/3/3/3.png
for api in "${apis[@]}"; do
  work=$(mktemp -d)
  FRACTILE_LISTEN=127.0.0.1:18750 FRACTILE_ADMIN_LISTEN=127.0.0.1:19750 FRACTILE_LOG_FORMAT=json \
    FRACTILE_SHUTDOWN_DELAY=0s valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$work/callgrind.out" "$api" > "$work/api.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  # Under valgrind the api starts in seconds, not milliseconds.
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null http://127.0.0.1:19750/readyz 2> /dev/null && break
    sleep 0.1
  done
  for _ in 1 2 3 4 5; do curl -fsS -o /dev/null "http://127.0.0.1:18750$tile"; done
  callgrind_control -i on "$pid" > /dev/null 2>&1
  checked_wrk -t1 -c8 -d10s "http://127.0.0.1:18750$tile" > "$work/wrk.txt"
  callgrind_control -i off "$pid" > /dev/null 2>&1
  stop_all
  requests=$(awk '/requests in/ { print $1 }' "$work/wrk.txt")
  # awk reads to the end: stopping early would fail the pipe (pipefail).
  total=$(callgrind_annotate "$work/callgrind.out" 2> /dev/null \
    | awk '/PROGRAM TOTALS/ && !found { gsub(",", "", $1); print $1; found = 1 }')
  printf '%s\t%s requests\t%s instructions\t%.0f per request\n' \
    "$api" "$requests" "$total" "$(echo "$total / $requests" | bc -l)"
  rm -rf "$work"
done
