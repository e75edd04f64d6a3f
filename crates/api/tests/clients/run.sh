#!/usr/bin/env bash
# The map clients' metadata read by real clients, installed from the registries here (never
# vendored): OWSLib (PyPI, pinned) parses the WMTS capabilities; GDAL (Debian's gdal-bin, 3.6)
# opens them (`gdalinfo WMTS:…`) and cuts a tile-aligned window at zoom 2 whose pixels must
# match the api's own tile; the TileJSON document's template fetches that tile. Against the
# embedded api (debug build) on a free loopback port, stopped on exit. Last, nginx's
# proxy_cache in front appends its own Cache-Status entry to the api's (a hit on the repeat).
# Needs: cargo, python3 (venv), gdal-bin, nginx.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../.." && pwd)
owslib=0.35.0
venv=${CLIENTS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fractile-clients-owslib-$owslib}
command -v gdalinfo > /dev/null || { echo "gdalinfo is required: apt-get install gdal-bin" >&2; exit 2; }
if [ ! -x "$venv/bin/python3" ] || ! "$venv/bin/python3" -c 'import owslib' 2> /dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "owslib==$owslib"
fi

cargo build --quiet --locked --manifest-path "$root/Cargo.toml" -p fractile-api
target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
read -r port admin_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
out=$(mktemp -d "${TMPDIR:-/tmp}/fractile-clients.XXXXXX")
FRACTILE_LISTEN=127.0.0.1:$port FRACTILE_ADMIN_LISTEN=127.0.0.1:$admin_port FRACTILE_MAX_ZOOM=4 \
  FRACTILE_SHUTDOWN_DELAY=0s "$target_dir/debug/fractile-api" > "$out/api.log" 2>&1 &
api=$!
trap 'kill -TERM "$api" 2> /dev/null || true; wait "$api" 2> /dev/null || true; rm -rf "$out"' EXIT
for _ in $(seq 1 100); do
  curl -fsS -o /dev/null "http://127.0.0.1:$admin_port/readyz" 2> /dev/null && break
  sleep 0.1
done
base=http://127.0.0.1:$port
caps=$base/wmts/1.0.0/WMTSCapabilities.xml

echo "== OWSLib $owslib reads the capabilities"
"$venv/bin/python3" - "$caps" <<'PY'
import sys
from owslib.wmts import WebMapTileService
wmts = WebMapTileService(sys.argv[1])
layers = sorted(wmts.contents)
assert layers == ["classic", "fire", "grayscale", "ocean"], layers
matrices = wmts.tilematrixsets["GoogleMapsCompatible"].tilematrix
assert sorted(matrices, key=int) == [str(z) for z in range(5)], list(matrices)
assert matrices["4"].matrixwidth == 16 and matrices["4"].tilewidth == 256
url = wmts.contents["fire"].resourceURLs[0]["template"]
assert url.endswith("/tiles/{TileMatrix}/{TileCol}/{TileRow}.png?style=fire"), url
print(f"   layers {', '.join(layers)}; zooms 0-4; fire's template {url}")
PY

echo "== GDAL $(gdalinfo --version | cut -d, -f1 | cut -d' ' -f2) opens them, and a window at zoom 2 is the api's tile 2/1/2"
gdalinfo "WMTS:$caps,layer=fire" > "$out/gdalinfo.txt"
grep -q 'Size is 4096, 4096' "$out/gdalinfo.txt" \
  || { echo "gdalinfo: not the 16 x 256 pixels of zoom 4:" >&2; head -20 "$out/gdalinfo.txt" >&2; exit 1; }
# Tile column 1, row 2 of zoom 2 is pixels 256-511 x 512-767 of that zoom's 1024-pixel raster.
gdal_translate -q -of PNG -srcwin 256 512 256 256 "WMTS:$caps,layer=fire,tilematrix=2" "$out/window.png"
curl -fsS -o "$out/tile.png" "$base/tiles/2/1/2.png?style=fire"
# The tile is an indexed PNG: its palette expanded to RGB, to compare with GDAL's bands.
gdal_translate -q -of PNG -expand rgb "$out/tile.png" "$out/tile-rgb.png"
checksums() { gdalinfo -checksum "$1" | awk '/Checksum=/ { sub(/.*Checksum=/, ""); print }' | head -n 3 | tr '\n' ' '; }
window=$(checksums "$out/window.png") tile=$(checksums "$out/tile-rgb.png")
if [ -z "$tile" ] || [ "$window" != "$tile" ]; then
  echo "GDAL's window ($window) differs from the tile ($tile)" >&2; exit 1
fi
echo "   RGB checksums of the window and the tile: $tile"

echo "== the TileJSON template fetches that tile"
template=$(curl -fsS "$base/tilejson.json?style=fire" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tiles"][0])')
url=${template/\{z\}/2}; url=${url/\{x\}/1}; url=${url/\{y\}/2}
curl -fsS -o "$out/from-tilejson.png" "$url"
cmp -s "$out/from-tilejson.png" "$out/tile.png" || { echo "$url is not the tile" >&2; exit 1; }
echo "   $url"
echo "== a shared cache in front appends its own Cache-Status entry (nginx proxy_cache)"
# The recipe of docs/cross-cutting.md ("Provenance"): nginx keeps the api's entry and adds
# its own, so the last entry is the cache nearest the client.
read -r cache_port < <(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$out/nginx/cache" "$out/nginx/tmp"
# Workers as this user: they write the cache into this run's private folder (run as root,
# nginx would otherwise switch them to nobody, who cannot).
cat > "$out/nginx/nginx.conf" <<NGINX
$([ "$(id -u)" -eq 0 ] && echo "user root;")
worker_processes 1;
error_log $out/nginx/error.log warn;
pid $out/nginx/nginx.pid;
events { worker_connections 64; }
http {
    access_log off;
    proxy_cache_path $out/nginx/cache keys_zone=tiles:1m;
    proxy_temp_path $out/nginx/tmp;
    client_body_temp_path $out/nginx/tmp;
    map \$upstream_cache_status \$nginx_entry { HIT "nginx; hit"; default "nginx; fwd=miss"; }
    server {
        listen 127.0.0.1:$cache_port;
        location / {
            proxy_pass $base;
            proxy_cache tiles;
            proxy_hide_header Cache-Status;
            add_header Cache-Status "\$upstream_http_cache_status, \$nginx_entry" always;
        }
    }
}
NGINX
nginx -p "$out/nginx" -c "$out/nginx/nginx.conf"
trap 'nginx -p "$out/nginx" -c "$out/nginx/nginx.conf" -s stop 2> /dev/null || true; kill -TERM "$api" 2> /dev/null || true; wait "$api" 2> /dev/null || true; rm -rf "$out"' EXIT
status_of() { curl -fsS -o /dev/null -D - "http://127.0.0.1:$cache_port$1" | tr -d '\r' | awk -F': ' 'tolower($1) == "cache-status" { print $2 }'; }
first=$(status_of /tiles/3/1/1.png) || { tail -5 "$out/nginx/error.log" >&2; exit 1; }
second=$(status_of /tiles/3/1/1.png)
[ "$first" = "fractile; fwd=miss; stored; detail=rendered, nginx; fwd=miss" ] \
  || { echo "first answer through the cache: Cache-Status: $first" >&2; exit 1; }
case "$second" in
  *", nginx; hit") ;;
  *) echo "second answer through the cache: Cache-Status: $second" >&2; exit 1 ;;
esac
echo "   first: $first"
echo "   then:  $second"
echo "clients ok"
