#!/usr/bin/env bash
# The overload experiment's floods: many connections each asking for a new tile the moment
# the last one was answered (`fractile-load flood`), with a probe for a cached tile beside
# them, against the local topology (deploy/local/start.sh: nginx, 2 api replicas, 1 worker,
# Redis, RabbitMQ). What every answer was is the result: a tile, the api's own 503 (JSON
# body, Retry-After), or anything else (nginx's 502 or 504, a failed connection).
#
# Usage:
#   loadtests/flood.sh report [connections] [seconds]
#       a flood straight at one api replica, then one through nginx at both (defaults: 1500
#       connections, 30 s); writes loadtests/reports/admission/flood/{direct,nginx}/flood.json
#       and flood/README.md. FLOOD_NAME names the run in the report (default: the commit);
#       with FRACTILE_LOCAL_BIN and FRACTILE_LOCAL_NGINX (see start.sh) it measures an
#       earlier build and nginx config into flood/<FLOOD_NAME>/ instead.
#   loadtests/flood.sh check [connections] [seconds]
#       CI's test: a flood through nginx (defaults: 1200 connections, 30 s) that fails unless
#       every answer was a tile or the api's own 503 (no 502, no 504, no failed connection)
#       and at least 99 % of the probes got their tile.
# Needs Debian's nginx, prometheus, redis-server and rabbitmq-server (start.sh); loopback only,
# bounded in time, the stack stopped on exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-}
case "$mode" in
  report) connections=${2:-1500} seconds=${3:-30} ;;
  check) connections=${2:-1200} seconds=${3:-30} ;;
  *) echo "usage: $0 report|check [connections] [seconds]" >&2; exit 2 ;;
esac
export FRACTILE_LOCAL_RUN=${FRACTILE_LOCAL_RUN:-/tmp/fractile-flood}
export FRACTILE_LOCAL_APIS=2 FRACTILE_LOCAL_WORKERS=1
lb_port=${FRACTILE_LOCAL_PORT:-18888}
export FRACTILE_LOCAL_PORT=$lb_port
export FRACTILE_LOCAL_PROMETHEUS_PORT=${FRACTILE_LOCAL_PROMETHEUS_PORT:-19190}
run=$FRACTILE_LOCAL_RUN

# The flood holds a descriptor per connection, and nginx two per proxied request.
ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((connections + 512)) ] \
  || { echo "the open-file limit ($(ulimit -n)) is below $connections connections" >&2; exit 1; }

cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p fractile-loadtest
load=$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/fractile-load

"$root/deploy/local/stop.sh" > /dev/null 2>&1 || true
trap '"$root/deploy/local/stop.sh" > /dev/null' EXIT
"$root/deploy/local/start.sh" > "$run.start.log" 2>&1 || { cat "$run.start.log" >&2; exit 1; }

# The kernel's count of connections dropped because a listen queue was full (this machine's
# network namespace: every process on it).
listen_overflows() { awk '/^TcpExt:/ { if (!n++) { for (i = 1; i <= NF; i++) if ($i == "ListenOverflows") c = i } else { print $c } }' /proc/net/netstat; }

# What the run did to nginx and the kernel: SYNs dropped at a full listen queue, a replica
# taken out of service by nginx, a request nginx could not place anywhere.
verdicts() {
  local disabled no_live
  disabled=$(grep -c 'upstream server temporarily disabled' "$run/nginx.log" || true)
  no_live=$(grep -c 'no live upstreams' "$run/nginx.log" || true)
  echo "kernel: $(($(listen_overflows) - overflows_before)) connections dropped at a full listen queue"
  echo "nginx: replicas taken out of service $disabled times; $no_live requests with no replica to go to"
}

# flood NAME TARGET OFFSET [ARGS...]: one run into $out/NAME.
flood() {
  local name=$1 target=$2 offset=$3
  shift 3
  : > "$run/nginx.log"
  overflows_before=$(listen_overflows)
  "$load" flood --target "$target" --connections "$connections" --seconds "$seconds" \
    --offset "$offset" --name "$name" --out "$out/$name" "$@"
}

if [ "$mode" = check ]; then
  out=$run/flood
  echo "== $connections connections of new tiles through nginx for $seconds s, a hot-tile probe beside them"
  status=0
  flood nginx "http://127.0.0.1:$lb_port" 0 --check-probe-ok 0.99 || status=$?
  verdicts
  [ "$status" -eq 0 ] || { echo "FAIL: the flood through nginx (above)" >&2; exit 1; }
  echo "flood ok"
  exit 0
fi

name=${FLOOD_NAME:-$(git -C "$root" rev-parse --short HEAD)}
report="$root/loadtests/reports/admission/flood"
out=$report
[ -z "${FRACTILE_LOCAL_BIN:-}${FRACTILE_LOCAL_NGINX:-}" ] || out=$report/$name
rm -rf "${out:?}/direct" "${out:?}/nginx"
echo "== $name: $connections connections of new tiles straight at api-1 for $seconds s"
flood direct http://127.0.0.1:18081 0 || true
verdicts | tee "$out/direct/verdicts.txt"
echo "== $name: $connections connections of new tiles through nginx for $seconds s"
flood nginx "http://127.0.0.1:$lb_port" 50000000 || true
verdicts | tee "$out/nginx/verdicts.txt"

# Every run measured so far, one row each, for the report's README.
python3 - "$report" > "$report/runs.md" <<'TABLE'
import json, pathlib, sys
report = pathlib.Path(sys.argv[1])
print("| run | target | requests | 200 | api's 503 | 502 | 504 | other | probe 200 | probe tile p99 ms |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for path in sorted(report.glob("**/flood.json")):
    r = json.loads(path.read_text())
    f, p = r["flood"], r["probe"]
    a = f["answers"]
    refused = sum(n for k, n in a.items() if k.startswith("503 "))
    known = a.get("200", 0) + refused + a.get("502", 0) + a.get("504", 0)
    run = path.parent.parent.name if path.parent.parent != report else "this tree"
    print(f"| {run} | {r['name']} | {f['requests']:,} | {a.get('200', 0):,} | {refused:,} | "
          f"{a.get('502', 0):,} | {a.get('504', 0):,} | {f['requests'] - known:,} | "
          f"{p['tiles']:,} of {p['requests']:,} | {p['tile_p99_ms']:.1f} |")
TABLE
cat "$report/runs.md"
