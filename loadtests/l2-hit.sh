#!/usr/bin/env bash
# An L2 hit against an L1 hit on the same tiles: the 4,096 tiles of zoom 6 stored in Redis,
# requested round and round by wrk (1 thread, 32 connections, loadtests/zoom-round-robin.lua)
# from one api pinned to core 0, wrk and Redis on core 1. Three apis share the Redis prefix:
# two with FRACTILE_L1_BYTES=0 (every request an L2 hit), one checking each tile's shape only
# (no MAC key: `l2`) and one also its MAC (`l2-mac`), and one with its L1 on and warmed (every
# request an L1 hit: `l1`). The tiles are stored signed, as a deployment with a key stores
# them. They are measured in interleaved rounds; the report gives each one's median requests
# per api CPU-second and latency, and Redis's CPU beside them.
#
# Usage: loadtests/l2-hit.sh [rounds] [seconds]       (default 3 rounds of 10 s per api)
#   L2_HIT_OUT=dir writes the report elsewhere (default loadtests/reports/l2-hit);
#   L2_HIT_API=path measures another fractile-api build (a before, say) than this tree's.
# Needs wrk, taskset, Redis on 127.0.0.1:6379; two cores or more.
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"
rounds=${1:-3}
seconds=${2:-10}
out=${L2_HIT_OUT:-$root/loadtests/reports/l2-hit}
prefix="loadtest-l2hit."
lua="$root/loadtests/zoom-round-robin.lua"
work=$(mktemp -d /tmp/fractile-l2-hit.XXXXXX)
[ "$(nproc)" -ge 2 ] || { echo "needs two cores: the api on core 0, wrk on core 1" >&2; exit 1; }
build_release
api_bin=${L2_HIT_API:-$bin/fractile-api}
forget_prefix "$prefix"
redis_env=(FRACTILE_REDIS_URL=redis://127.0.0.1:6379 "FRACTILE_KEY_PREFIX=$prefix")
mac_env=(FRACTILE_TILE_MAC_KEY=l2-hit-measurement-key-0123456789abcdef0123456789)

# Every zoom-6 tile once, four at a time, as a curl config.
for i in $(seq 0 4095); do
  printf 'url = "http://127.0.0.1:PORT/tiles/6/%d/%d.png"\noutput = "/dev/null"\n' $((i % 64)) $((i / 64))
done > "$work/zoom6.template"
each_tile() {
  sed "s/PORT/$1/" "$work/zoom6.template" > "$work/zoom6-$1.curl"
  curl -fsS --no-progress-meter -Z --parallel-max 4 -K "$work/zoom6-$1.curl" 2>&1 | tail -n 5
}

# Fill: an api renders each tile once and stores it in Redis (in the background of each
# response), then the keys are counted until all are there.
start fractile-api 19690 "$work/fill.log" "${redis_env[@]}" "${mac_env[@]}" FRACTILE_LISTEN=127.0.0.1:18690 FRACTILE_RENDER_THREADS=2
each_tile 18690
for _ in $(seq 1 100); do
  stored=$(redis-cli --scan --pattern "${prefix}tile:*" | wc -l)
  [ "$stored" -ge 4096 ] && break
  sleep 0.3
done
[ "$stored" -ge 4096 ] || { echo "only $stored of 4096 tiles reached Redis" >&2; exit 1; }
mapfile -t keys < <(redis-cli --scan --pattern "${prefix}tile:*")
bytes=$(for k in "${keys[@]}"; do redis-cli strlen "$k"; done | awk '{ s += $1 } END { printf "%.0f", s / NR }')
stop_all

# The two apis (this tree's build, or L2_HIT_API's), each alone on core 0 from launch.
if [ "$api_bin" != "$bin/fractile-api" ]; then
  mkdir -p "$work/bin"
  cp "$api_bin" "$work/bin/fractile-api"
  bin=$work/bin
fi
pin_core=0 start fractile-api 19691 "$work/l2.log" "${redis_env[@]}" FRACTILE_L1_BYTES=0 FRACTILE_LISTEN=127.0.0.1:18691
l2_pid=${pids[-1]}
pin_core=0 start fractile-api 19693 "$work/l2-mac.log" "${redis_env[@]}" "${mac_env[@]}" FRACTILE_L1_BYTES=0 FRACTILE_LISTEN=127.0.0.1:18693
l2_mac_pid=${pids[-1]}
pin_core=0 start fractile-api 19692 "$work/l1.log" "${redis_env[@]}" FRACTILE_LISTEN=127.0.0.1:18692
l1_pid=${pids[-1]}
each_tile 18692                                             # L1 warm: from now on every request is an L1 hit
for check in "18691 l2" "18693 l2" "18692 l1"; do
  read -r port layer <<< "$check"
  got=$(curl -fsS -o /dev/null -D - "http://127.0.0.1:$port/tiles/6/5/7.png" | tr -d '\r' | awk -F': ' 'tolower($1) == "cache-status" { print $2 }')
  [ "$got" = "fractile; hit; detail=$layer" ] || { echo "port $port answered Cache-Status: $got, not a $layer hit" >&2; exit 1; }
done
redis_pid=$(pgrep -x redis-server | head -n 1 || true)
# Redis joins wrk on core 1 for the measurement, all its threads, so the api has core 0 to
# itself (as it would have its own machine) and where the scheduler puts Redis does not move
# the figures from round to round; its affinity is put back at the end.
if [ -n "$redis_pid" ] && redis_mask=$(taskset -p "$redis_pid" | awk '{ print $NF }'); then
  taskset -a -p -c 1 "$redis_pid" > /dev/null
  trap 'taskset -a -p "$redis_mask" "$redis_pid" > /dev/null || true; stop_all' EXIT
fi

printf 'round\ttarget\trequests_per_s\tp50\tp99\tapi_cpu_s\trequests_per_api_cpu_s\tredis_cpu_s\n' > "$work/rounds.tsv"
for round in $(seq 1 "$rounds"); do
  for target in l2 l2-mac l1; do
    case $target in
      l2) pid=$l2_pid port=18691 ;;
      l2-mac) pid=$l2_mac_pid port=18693 ;;
      l1) pid=$l1_pid port=18692 ;;
    esac
    api_before=$(cpu_ticks "$pid")
    redis_before=$([ -n "$redis_pid" ] && cpu_ticks "$redis_pid" || echo 0)
    result=$(wrk_core=1 checked_wrk -t1 -c32 -d"${seconds}s" --latency -s "$lua" "http://127.0.0.1:$port" -- 6)
    api_after=$(cpu_ticks "$pid")
    redis_after=$([ -n "$redis_pid" ] && cpu_ticks "$redis_pid" || echo 0)
    wrk_row "$round" "$target" "$seconds" $((api_after - api_before)) $((redis_after - redis_before)) \
      <<< "$result" >> "$work/rounds.tsv"
    tail -n 1 "$work/rounds.tsv"
  done
done

mkdir -p "$out"
cp "$work/rounds.tsv" "$out/rounds.tsv"
python3 - "$out" "$bytes" "$rounds" "$seconds" "$(lscpu | sed -n 's/^Model name: *//p')" <<'PY'
import csv, statistics, sys
out, size, rounds, seconds, cpu = sys.argv[1:]
rows = list(csv.DictReader(open(f"{out}/rounds.tsv"), delimiter="\t"))
def ms(v):
    return float(v[:-2]) if v.endswith("ms") else float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-1]) * 1000
def med(t, f, conv=float):
    return statistics.median(conv(r[f]) for r in rows if r["target"] == t)
targets = [t for t in ("l2", "l2-mac", "l1") if any(r["target"] == t for r in rows)]
eff = {t: med(t, "requests_per_api_cpu_s") for t in targets}
p50 = {t: med(t, "p50", ms) for t in targets}
lines = [
    "# L2 hits against L1 hits on the same tiles",
    "",
    f"The 4,096 tiles of zoom 6 (mean {size} bytes in Redis) requested round and round by wrk "
    "(1 thread, 32 connections) from one api pinned to core 0, wrk and Redis on core 1; `l2`: "
    "FRACTILE_L1_BYTES=0, every request a Redis hit, each tile's shape checked; `l2-mac`: the "
    "same with FRACTILE_TILE_MAC_KEY, each tile's MAC checked too; `l1`: L1 warmed, every "
    f"request an L1 hit. {rounds} interleaved rounds of {seconds} s; medians. CPU: {cpu}.",
    "",
    "| api | requests/s | p50 | p99 | requests per api CPU-second | Redis CPU-seconds per round |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
]
for t in targets:
    lines.append(f"| {t} | {med(t, 'requests_per_s'):.0f} | {p50[t]:.2f} ms | {med(t, 'p99', ms):.2f} ms | "
                 f"{eff[t]:.0f} | {med(t, 'redis_cpu_s'):.2f} |")
lines += ["", f"An L2 hit at {eff['l2'] / eff['l1']:.2f} × the L1 hit's requests per api CPU-second; "
          f"p50 {p50['l2'] - p50['l1']:+.2f} ms."]
if "l2-mac" in eff:
    lines += ["", f"Checking the MAC too: {eff['l2-mac'] / eff['l1']:.2f} × the L1 hit, "
              f"{eff['l2-mac'] / eff['l2']:.2f} × the L2 hit without it; "
              f"{1e6 / eff['l2-mac'] - 1e6 / eff['l2']:.1f} µs of api CPU per hit."]
lines += ["",
          f"Every round: [rounds.tsv](rounds.tsv). Command: `loadtests/l2-hit.sh {rounds} {seconds}`."]
open(f"{out}/README.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
stop_all
forget_prefix "$prefix"
rm -rf "$work"
