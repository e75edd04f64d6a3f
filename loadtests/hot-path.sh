#!/usr/bin/env bash
# The hot path against two yardsticks: a cached tile served by the api (L1 hit through the
# whole traffic stack: request id, span, metrics, admission, the handler), by a minimal hyper
# server returning the same bytes (loadtests/src/bin/bare-tile-server.rs), and by nginx
# serving them as a static file (sendfile, one worker, no access log); then the compose
# topology's path, nginx (deploy/nginx/nginx.conf) in front of the api, against the same
# nginx in front of the bare server.
#
# Every server runs pinned to core 0, wrk (1 thread, 64 connections) to core 1. The targets
# are measured in interleaved rounds in one run, and the report gives each one's median over
# the rounds of requests per server CPU-second (utime + stime of the server's processes from
# /proc, nginx's and its backend's together behind nginx), the figure that does not depend
# on what else the machine did.
#
# Usage: loadtests/hot-path.sh [rounds] [seconds]        (default 5 rounds of 10 s per target)
#   HOT_PATH_APIS="label=/path/to/fractile-api ..." adds api builds to measure directly beside
#   this tree's (each change's effect); HOT_PATH_OUT=dir writes the report elsewhere.
# Needs wrk, nginx (Debian) and taskset; two cores or more. About rounds × 5 × seconds.
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"
rounds=${1:-5}
seconds=${2:-10}
out=${HOT_PATH_OUT:-$root/loadtests/reports/hot-path}
tile=/tiles/3/3/3.png
work=$(mktemp -d /tmp/fractile-hot-path.XXXXXX)
chmod 755 "$work"                         # nginx's worker (not root) reads the static file
[ "$(nproc)" -ge 2 ] || { echo "needs two cores: servers on core 0, wrk on core 1" >&2; exit 1; }

build_release
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p fractile-loadtest --bin bare-tile-server

# The api builds to measure: this tree's, then any given in HOT_PATH_APIS.
apis=("api=$bin/fractile-api")
read -r -a extra <<< "${HOT_PATH_APIS:-}"
apis+=("${extra[@]}")

# serve_pinned NAME COMMAND...: runs a server on core 0 and records its pid under NAME.
declare -A pid_of
serve_pinned() {
  local name=$1
  shift
  taskset -c 0 "$@" > "$work/$name.log" 2>&1 &
  pids+=($!)
  pid_of[$name]=$!
}

# Ports: each api build 18710+i (admin 19710+i), bare 18701, nginx static 18702, nginx in
# front of the bare server 18703, in front of this tree's api 18720.
targets=()
declare -A url_of cpu_of
i=0
for entry in "${apis[@]}"; do
  label=${entry%%=*}
  # Logging as the compose stack and the manifests set it: JSON, level info, so the span is on.
  serve_pinned "$label" env FRACTILE_LOG_FORMAT=json RUST_LOG=info \
    FRACTILE_LISTEN=127.0.0.1:$((18710 + i)) FRACTILE_ADMIN_LISTEN=127.0.0.1:$((19710 + i)) \
    "${entry#*=}"
  wait_ready $((19710 + i))
  url_of[$label]=http://127.0.0.1:$((18710 + i))$tile
  cpu_of[$label]=$label
  i=$((i + 1))
done
mkdir -p "$work/static/tiles/3/3"
curl -fsS -o "$work/static$tile" "${url_of[api]}"      # the first request renders it; all later ones hit L1
bytes=$(wc -c < "$work/static$tile")
serve_pinned bare "$bin/bare-tile-server" 127.0.0.1:18701 "$work/static$tile"
url_of[bare]=http://127.0.0.1:18701$tile
cpu_of[bare]=bare

# One nginx, one worker: the static file server, and deploy/nginx/nginx.conf's proxy location
# in front of the bare server and of this tree's api (its access log off, as for the static server: logging is not the path
# being measured, and it would cost both sides the same).
{
  echo "worker_processes 1;"
  echo "error_log stderr warn;"
  echo "events { worker_connections 4096; }"
  echo "http {"
  echo "    access_log off;"
  echo "    sendfile on;"
  echo "    keepalive_requests 1000000;"
  echo "    map \$http_x_request_id \$fractile_request_id { default \$http_x_request_id; \"\" \$request_id; }"
  echo "    server { listen 127.0.0.1:18702; root $work/static; location /tiles/ { default_type image/png; } }"
  # The proxy location of the stack's nginx.conf, verbatim.
  location=$(sed -n '/^        location \/ {/,/^        }/p' "$root/deploy/nginx/nginx.conf")
  [ -n "$location" ] || { echo "proxy location not found in deploy/nginx/nginx.conf" >&2; exit 1; }
  proxy() { # proxy NAME LISTEN BACKEND
    echo "    upstream $1 { least_conn; server $3; keepalive 64; keepalive_timeout 5s; }"
    echo "    server { listen 127.0.0.1:$2;"
    echo "${location//http:\/\/api;/http://$1;}"
    echo "    }"
  }
  proxy up_bare 18703 127.0.0.1:18701
  proxy up_api 18720 127.0.0.1:18710
  echo "}"
} > "$work/nginx.conf"
nginx -t -q -p "$work" -c "$work/nginx.conf" -g "pid $work/nginx.pid;"
serve_pinned nginx nginx -p "$work" -c "$work/nginx.conf" -g "daemon off; pid $work/nginx.pid;"
url_of[nginx]=http://127.0.0.1:18702$tile
cpu_of[nginx]=nginx
url_of[nginx+bare]=http://127.0.0.1:18703$tile
cpu_of[nginx+bare]="nginx bare"
url_of[nginx+api]=http://127.0.0.1:18720$tile
cpu_of[nginx+api]="nginx api"
targets=()
for entry in "${apis[@]}"; do targets+=("${entry%%=*}"); done
targets+=(bare nginx nginx+api nginx+bare)
for t in "${targets[@]}"; do
  wait_http "${url_of[$t]}"
  [ "$(curl -fsS "${url_of[$t]}" | cmp - "$work/static$tile" && echo same)" = same ] \
    || { echo "$t does not serve the same bytes" >&2; exit 1; }
done

# ticks NAMES...: CPU ticks of the named servers, with their children (nginx's worker).
ticks() {
  local total=0 name p
  for name in "$@"; do
    for p in ${pid_of[$name]} $(pgrep -P "${pid_of[$name]}"); do
      total=$((total + $(cpu_ticks "$p")))
    done
  done
  echo "$total"
}

echo "tile $tile: $bytes bytes; targets: ${targets[*]}; $rounds rounds of ${seconds} s each"
for t in "${targets[@]}"; do checked_wrk -t1 -c64 -d2s "${url_of[$t]}" > /dev/null; done   # warm-up
printf 'round\ttarget\trequests_per_s\tp50\tp99\tcpu_s\trequests_per_cpu_s\n' > "$work/rounds.tsv"
for round in $(seq 1 "$rounds"); do
  for t in "${targets[@]}"; do
    # shellcheck disable=SC2086 # cpu_of holds a list of names
    before=$(ticks ${cpu_of[$t]})
    result=$(wrk_core=1 checked_wrk -t1 -c64 -d"${seconds}s" --latency "${url_of[$t]}")
    # shellcheck disable=SC2086
    after=$(ticks ${cpu_of[$t]})
    wrk_row "$round" "$t" "$seconds" $((after - before)) <<< "$result" >> "$work/rounds.tsv"
    tail -n 1 "$work/rounds.tsv"
  done
done

mkdir -p "$out"
cp "$work/rounds.tsv" "$out/rounds.tsv"
python3 - "$out" "$bytes" "$rounds" "$seconds" "$(lscpu | sed -n 's/^Model name: *//p')" "${targets[@]}" <<'PY'
import csv, os, statistics, sys
out, size, rounds, seconds, cpu, *targets = sys.argv[1:]
rows = list(csv.DictReader(open(f"{out}/rounds.tsv"), delimiter="\t"))
def median(t, field):
    return statistics.median(float(r[field]) for r in rows if r["target"] == t)
eff = {t: median(t, "requests_per_cpu_s") for t in targets}
apis = [t for t in targets if t not in ("bare", "nginx") and not t.startswith("nginx+")]
lines = [
    "# The hot path against a bare hyper server and nginx",
    "",
    f"One cached tile (`/tiles/3/3/3.png`, {size} bytes) served by each target in turn, "
    f"{rounds} interleaved rounds of {seconds} s each. Servers pinned to core 0, wrk "
    "(1 thread, 64 connections) to core 1; server CPU is utime + stime from /proc (behind "
    f"nginx: nginx's and the backend's together). CPU: {cpu}. Medians over the rounds.",
    "",
    "| target | requests/s | p50 | p99 | requests per server CPU-second |",
    "| --- | --- | --- | --- | --- |",
]
for t in targets:
    sub = [r for r in rows if r["target"] == t]
    p50 = statistics.median_low([r["p50"] for r in sub])
    p99 = statistics.median_low([r["p99"] for r in sub])
    lines.append(f"| {t} | {median(t, 'requests_per_s'):.0f} | {p50} | {p99} | {eff[t]:.0f} |")
lines += ["", "| api build | × bare hyper | × nginx static |", "| --- | --- | --- |"]
for a in apis:
    lines.append(f"| {a} | {eff[a] / eff['bare']:.2f} | {eff[a] / eff['nginx']:.2f} |")
lines += ["", f"Behind nginx (deploy/nginx/nginx.conf's proxy location, one worker): the api at "
          f"{eff['nginx+api'] / eff['nginx+bare']:.2f} × the bare server, per CPU-second of nginx "
          "and the backend together."]
extra = " ".join(f"{a}=…" for a in apis if a != "api")
prefix = f'HOT_PATH_APIS="{extra}" ' if extra else ""
lines += ["", "Every round's figures: [rounds.tsv](rounds.tsv). Command: "
          f"`{prefix}loadtests/hot-path.sh {rounds} {seconds}`."]
if os.path.exists(f"{out}/profile.md"):
    lines += ["", "Where the api's time goes, and what each change did: [profile.md](profile.md)."]
open(f"{out}/README.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
rm -rf "$work"
