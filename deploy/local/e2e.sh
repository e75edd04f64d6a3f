#!/usr/bin/env bash
# End-to-end test of the whole topology as local processes (start.sh): every request goes
# through nginx. Checks that requests reach all three api replicas, that misses are rendered
# by the workers, that Prometheus has every target up, evaluates every dashboard query and
# loaded the alert rules, and that SIGKILLing an api replica under load fails no GET.
# Also runs the load generator's browse smoke test (any 5xx but an intended 503 fails), and
# checks that nginx refuses the seed routes (the default) while an api replica takes a seed
# with the token only.
# Prints the figures (requests per replica, the kill run's errors). Stops the stack on exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export FRACTILE_LOCAL_RUN=${FRACTILE_LOCAL_RUN:-/tmp/fractile-e2e}
lb=http://127.0.0.1:${FRACTILE_LOCAL_PORT:-8080}
prometheus=http://127.0.0.1:${FRACTILE_LOCAL_PROMETHEUS_PORT:-9090}
run=$FRACTILE_LOCAL_RUN

"$root/deploy/local/stop.sh" > /dev/null 2>&1 || true
trap '"$root/deploy/local/stop.sh" > /dev/null' EXIT
# The default: nginx does not route /v1/ (checked below).
export NGINX_V1_ROUTES=closed
"$root/deploy/local/start.sh"
# SEED_TOKEN, as start.sh gave it to the api replicas.
# shellcheck source=/dev/null
set -a; source "$root/.env"; set +a

fail() { echo "FAIL: $*" >&2; exit 1; }
# metric URL NAME_AND_LABELS: the sum of matching samples on one /metrics page.
metric() { curl -fsS "$1/metrics" | awk -v m="$2" 'index($0, m) == 1 { s += $NF } END { print s + 0 }'; }
tiles='http_requests_total{route="/tiles/{z}/{x}/{y}",status="2xx"}'

echo "== the viewer and misses through nginx"
# Into a file first: `curl | grep -q` fails under pipefail when grep stops reading early.
curl -fsS -o "$run/viewer.html" "$lb/" || fail "the viewer is not served through nginx"
grep -q "fractile" "$run/viewer.html" || fail "the page served through nginx is not the viewer"
for y in $(seq 0 29); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$lb/tiles/7/$((40 + y))/50.png")
  [ "$code" = 200 ] || fail "miss $y answered $code"
done
worker_renders=0
for i in 1 2; do worker_renders=$((worker_renders + $(metric "http://127.0.0.1:1909$i" 'renders_total{result="ok"}'))); done
api_renders=0
for i in 1 2 3; do api_renders=$((api_renders + $(metric "http://127.0.0.1:1908$i" 'renders_total{result="ok"}'))); done
echo "renders by the workers: $worker_renders; by the api replicas: $api_renders"
[ "$worker_renders" -ge 30 ] || fail "the workers rendered $worker_renders of 30 misses"
[ "$api_renders" -eq 0 ] || fail "api replicas rendered $api_renders tiles themselves"

echo "== seeds: refused at nginx, the token required at the api"
seed=(-H 'content-type: application/json' -d '{"min_zoom": 0, "max_zoom": 2}')
auth="Authorization: Bearer $SEED_TOKEN"
code=$(curl -s -o "$run/seed-lb.json" -w '%{http_code}' "${seed[@]}" -H "$auth" "$lb/v1/seeds")
if [ "$code" != 403 ] || ! grep -q operator_route "$run/seed-lb.json"; then
  fail "nginx answered $code to POST /v1/seeds"
fi
replica=http://127.0.0.1:18081
code=$(curl -s -o /dev/null -w '%{http_code}' "${seed[@]}" "$replica/v1/seeds")
[ "$code" = 401 ] || fail "a seed without the token answered $code"
location=$(curl -fsS -o /dev/null -w '%header{location}' "${seed[@]}" -H "$auth" "$replica/v1/seeds") \
  || fail "a seed with the token was not accepted"
curl -fsS -o /dev/null -H "$auth" "$replica$location" || fail "GET $location failed"
curl -fsS -o /dev/null -X DELETE -H "$auth" "$replica$location" || fail "DELETE $location failed"
echo "nginx: 403 on /v1/; api-1: 401 without the token, a seed accepted, read and cancelled with it"

echo "== load is shared by the three replicas"
wrk -t1 -c12 -d5s "$lb/tiles/3/2/3.png" > "$run/wrk-share.txt"
split=""
for i in 1 2 3; do
  n=$(metric "http://127.0.0.1:1908$i" "$tiles")
  [ "$n" -gt 0 ] || fail "api-$i served no tile request"
  split="$split api-$i=$n"
done
echo "tile requests per replica:$split"

echo "== prometheus: targets, dashboard queries, alert rules"
for _ in $(seq 1 100); do
  up=$(curl -fsS "$prometheus/api/v1/query?query=sum(up)" | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(int(float(r[0]["value"][1])) if r else 0)')
  [ "$up" -eq 7 ] && break
  sleep 0.2
done
[ "$up" -eq 7 ] || fail "$up of 7 targets up"
echo "targets up: $up of 7 (api ×3, worker ×2, the edge's mtail, prometheus)"
# The edge counted the tile requests nginx answered above (the load-sharing run's included).
edge=$(curl -fsS "http://127.0.0.1:${FRACTILE_LOCAL_MTAIL_PORT:-3903}/metrics" \
  | awk '$1 == "fractile_edge_tile_requests_total" { print int($2) }')
[ "${edge:-0}" -gt 0 ] || fail "the edge's mtail counted no tile request (fractile_edge_tile_requests_total)"
echo "the edge counted $edge valid tile requests"
python3 "$root/deploy/grafana/check_dashboard.py" "$root/deploy/grafana/dashboards/fractile.json" --prometheus "$prometheus"
curl -fsS "$prometheus/api/v1/rules" | python3 -c '
import json, sys
groups = json.load(sys.stdin)["data"]["groups"]
rules = [r for g in groups for r in g["rules"] if r["type"] == "alerting"]
bad = [r["name"] for r in rules if r.get("health") not in ("ok", "unknown")]
assert rules, "no alerting rules loaded"
assert not bad, f"rules failing to evaluate: {bad}"
names = {r["name"] for r in rules}
assert "TileAvailabilityBudgetBurn" in names, "the SLO rules are not loaded"
print(f"alert rules loaded: {len(rules)}")'
curl -fsS "$prometheus/api/v1/alertmanagers" | python3 -c '
import json, sys
active = json.load(sys.stdin)["data"]["activeAlertmanagers"]
assert len(active) == 1, f"prometheus sends alerts to {active}, not to the one alertmanager"
print("alerts go to", active[0]["url"])'

echo "== smoke: 15 s of browse traffic through nginx (fails on any 5xx but an intended 503)"
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p fractile-loadtest
load=$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/fractile-load
"$load" run --target "$lb" --scenario browse --rate 80 --seconds 15 --fail-on-errors --name smoke --out "$run/smoke"

echo "== SIGKILL of an api replica under load"
wrk -t1 -c8 -d8s -s "$root/loadtests/unique-tiles.lua" "$lb" > "$run/wrk-kill.txt" &
generator=$!
sleep 3
victim=$(awk '$1 == "api-2" { print $2 }' "$run/pids")
kill -KILL "$victim"
echo "killed api-2 (pid $victim) 3 s into an 8 s run"
wait $generator
cat "$run/wrk-kill.txt"
requests=$(awk '/requests in/ { print $1 }' "$run/wrk-kill.txt")
non2xx=$(awk -F': ' '/Non-2xx/ { print $2 }' "$run/wrk-kill.txt")
socket=$(awk '/Socket errors/ { gsub(/[^0-9 ]/, " "); s = 0; for (i = 1; i <= NF; i++) s += $i; print s }' "$run/wrk-kill.txt")
errors=$(( ${non2xx:-0} + ${socket:-0} ))
echo "kill run: $requests requests, $errors failed (non-2xx ${non2xx:-0}, socket errors ${socket:-0})"
[ "$errors" -eq 0 ] || fail "$errors requests failed while a replica died"
echo "e2e ok"
