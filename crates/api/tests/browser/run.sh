#!/usr/bin/env bash
# Starts a debug fractile-api on loopback, runs the headless-Chromium tests against it (the
# viewer; MapLibre GL and OpenLayers from another origin), and stops the api again, whatever
# happens. Screenshots land in output/.
# Needs: cargo, node + npm, and Chromium at /usr/bin/chromium (or $CHROMIUM).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../.." && pwd)
port=${VIEWER_TEST_PORT:-18480}
admin_port=${VIEWER_TEST_ADMIN_PORT:-19480}

cargo build --quiet --manifest-path "$root/Cargo.toml" -p fractile-api
target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

mkdir -p "$here/output"
# Exporting spans (to a port nothing listens on: the exports fail, counted, and cost the
# requests nothing), so sampled responses carry traceresponse, which the tile labels show.
FRACTILE_LISTEN=127.0.0.1:$port FRACTILE_ADMIN_LISTEN=127.0.0.1:$admin_port \
  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:9 \
  "$target_dir/debug/fractile-api" > "$here/output/api.log" 2>&1 &
api=$!
trap 'kill -TERM $api 2>/dev/null; wait $api 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$admin_port/readyz" > /dev/null 2>&1 && break
  kill -0 $api 2>/dev/null || { cat "$here/output/api.log"; echo "api exited" >&2; exit 1; }
  sleep 0.1
done

node "$here/viewer.test.mjs" "http://127.0.0.1:$port"
# MapLibre GL and OpenLayers on a page of another origin: CORS, TileJSON and WMTS.
node "$here/map-clients.test.mjs" "http://127.0.0.1:$port"
