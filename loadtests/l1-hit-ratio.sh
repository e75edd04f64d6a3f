#!/usr/bin/env bash
# The browse experiment's L1 hit ratio with r1 tiles (24-bit RGB) and this tree's (r3, 8-bit
# paletted) at the same FRACTILE_L1_BYTES: smaller tiles, more of them in the same bytes.
#
# Each renderer runs as one api in embedded mode (2 render threads, no Redis), cold, and takes
# the caching experiment's browse traffic (150 tiles/s for 30 s, the same request sequence in
# both runs); the hit ratio is the api's own cache_requests_total{layer="l1"}, read at the end,
# beside the bytes and entries its L1 then held.
#
# Usage: R1_API=/path/to/r1/fractile-api loadtests/l1-hit-ratio.sh [l1_bytes]
#   (default 8 MiB). Build R1_API from the commit before r2 in a target directory of its own:
#   git worktree add --detach /tmp/r1 2b1fcd6^ &&
#   (cd /tmp/r1 && CARGO_TARGET_DIR=/tmp/r1-target cargo build --release -p fractile-api)
# Writes loadtests/reports/l1-hit-ratio/README.md.
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"
l1_bytes=${1:-$((8 * 1024 * 1024))}
: "${R1_API:?set R1_API to an r1 build of fractile-api (see the usage above)}"
out=$root/loadtests/reports/l1-hit-ratio
build_release
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p fractile-loadtest
rm -rf "$out"
mkdir -p "$out"

# metric NAME_AND_LABELS: its value on the api's admin port (19630), 0 when absent.
metric() {
  curl -fsS http://127.0.0.1:19630/metrics | awk -v m="$1" '$1 == m { v = $2 } END { print v + 0 }'
}

rows=()
# The third run is the ceiling: the default 128 MiB, where every tile of the run fits, so
# only first requests miss.
for run in r1 r3 r3-128MiB; do
  renderer=${run%%-*}
  bytes_allowed=$l1_bytes
  [ "$run" = r3-128MiB ] && bytes_allowed=$((128 * 1024 * 1024))
  if [ "$renderer" = r1 ]; then api=$R1_API; else api=$bin/fractile-api; fi
  env FRACTILE_ADMIN_LISTEN=127.0.0.1:19630 FRACTILE_LISTEN=127.0.0.1:18630 RUST_LOG=warn \
    FRACTILE_RENDER_THREADS=2 FRACTILE_L1_BYTES="$bytes_allowed" "$api" > "/tmp/l1-hit-ratio-$run.log" 2>&1 &
  pids+=($!)
  wait_ready 19630
  "$bin/fractile-load" run --target http://127.0.0.1:18630 --scenario browse --rate 150 --seconds 30 \
    --name "$run" --out "$out/$run" > /dev/null
  hits=$(metric 'cache_requests_total{layer="l1",result="hit"}')
  misses=$(metric 'cache_requests_total{layer="l1",result="miss"}')
  bytes=$(metric 'cache_bytes{layer="l1"}')
  entries=$(metric 'cache_entries{layer="l1"}')
  mean=$(curl -fsS -o /dev/null -w '%{size_download}' http://127.0.0.1:18630/tiles/3/3/3.png)
  rows+=("$(awk -v r="$run" -v h="$hits" -v m="$misses" -v b="$bytes" -v e="$entries" -v t="$mean" \
    'BEGIN { printf "| %s | %d | %d | %.1f %% | %d | %.1f MiB | %d |", r, h, m, 100 * h / (h + m), e, b / 1048576, t }')")
  stop_all
done

{
  echo "# L1 hit ratio: r1 tiles against r3 tiles in the same bytes"
  echo
  echo "One api per run (embedded mode, 2 render threads, no Redis), cold, FRACTILE_L1_BYTES=$l1_bytes"
  echo "unless the run says otherwise;"
  echo "the caching experiment's browse traffic (150 tiles/s for 30 s, the same request sequence in"
  echo "both runs). Lookups counted by the api (cache_requests_total{layer=\"l1\"}); the L1's entries"
  echo "and bytes (tile bytes plus a fixed per-entry overhead) at the end of the run. Machine: $(nproc) cores."
  echo
  echo "| run | L1 hits | L1 misses | hit ratio | entries held | bytes held | tile 3/3/3 bytes |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
  echo
  echo "r3-128MiB is the ceiling (the default FRACTILE_L1_BYTES: every tile of the run fits, only a"
  echo "tile's first request misses). Per-run load reports: [r1](r1/report.md), [r3](r3/report.md),"
  echo "[r3-128MiB](r3-128MiB/report.md)."
  echo "Command: \`R1_API=... loadtests/l1-hit-ratio.sh $l1_bytes\`."
} > "$out/README.md"
cat "$out/README.md"
