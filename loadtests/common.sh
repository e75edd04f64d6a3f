# Shared by the load-test scripts: build release binaries, start fractile processes on
# loopback, wait for them, and stop everything on exit. Source it; do not run it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pids=()
# The seed routes' bearer token of the apis these scripts start (loopback only, one run).
# shellcheck disable=SC2034 # used by the scripts that source this file
seed_token=loadtest-seed-token-$$-$RANDOM$RANDOM

build_release() {
  cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p fractile-api -p fractile-worker
  target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  bin="$target_dir/release"
}

# checked_wrk WRK_ARGS...: runs wrk (on core $wrk_core alone when that is set) and prints
# its output; a run in which any response was not 2xx/3xx or any socket failed measured
# errors, not the path it meant to, so the script stops there, saying so.
checked_wrk() {
  local out pin=()
  [ -z "${wrk_core:-}" ] || pin=(taskset -c "$wrk_core")
  # Checked here, not left to errexit: a command substitution does not inherit it.
  out=$("${pin[@]}" wrk "$@") || { echo "wrk failed: $out" >&2; return 1; }
  echo "$out"
  if grep -qE 'Non-2xx or 3xx responses|Socket errors' <<< "$out"; then
    echo "this wrk run measured errors (see the lines above): its figures are not valid" >&2
    return 1
  fi
}

# wrk_row ROUND TARGET SECONDS CPU_TICKS [OTHER_TICKS] < wrk --latency output: one
# tab-separated row: round, target, requests/s, p50, p99, CPU-seconds, requests per
# CPU-second, and OTHER_TICKS as CPU-seconds when given (another process's, beside it).
wrk_row() {
  awk -v r="$1" -v t="$2" -v s="$3" -v c="$4" -v o="${5:-}" -v hz="$(getconf CLK_TCK)" '
    /requests in/ { n = $1 } $1 == "50%" { p50 = $2 } $1 == "99%" { p99 = $2 }
    END {
      printf "%s\t%s\t%.0f\t%s\t%s\t%.2f\t%.0f", r, t, n / s, p50, p99, c / hz, n / (c / hz)
      if (o != "") printf "\t%.2f", o / hz
      printf "\n"
    }'
}

stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap stop_all EXIT

# wait_http URL: until it answers 2xx (at most 20 s).
wait_http() {
  for _ in $(seq 1 200); do
    curl -fsS -o /dev/null "$1" 2> /dev/null && return 0
    sleep 0.1
  done
  echo "$1 did not answer" >&2
  return 1
}

# wait_ready ADMIN_PORT: until the process's /readyz answers 200 (at most 20 s).
wait_ready() { wait_http "http://127.0.0.1:$1/readyz"; }

# start BINARY ADMIN_PORT LOG [VAR=value ...]: runs a fractile binary with extra environment,
# on core $pin_core alone when that is set (from launch, so its runtime sizes itself to it).
start() {
  local binary=$1 admin=$2 log=$3 pin=()
  shift 3
  [ -z "${pin_core:-}" ] || pin=(taskset -c "$pin_core")
  "${pin[@]}" env FRACTILE_ADMIN_LISTEN="127.0.0.1:$admin" RUST_LOG=warn "$@" "$bin/$binary" > "$log" 2>&1 &
  pids+=($!)
  wait_ready "$admin"
}

# api_cpu_ticks PID: utime + stime in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# forget_prefix PREFIX: deletes the Redis keys and queues under a script's fixed prefix, so
# every run starts cold (the dead-letter exchange is left for the next run to reuse).
# render.interactive is the interactive queue of builds before its .v2 (a before-and-after
# run starts one).
forget_prefix() {
  redis-cli --scan --pattern "$1*" | xargs -r redis-cli del > /dev/null
  for q in render.interactive render.interactive.v2 render.bulk render.dead render.dead.v2; do
    rabbitmqctl --quiet delete_queue "$1$q" > /dev/null 2>&1 || true
  done
}
