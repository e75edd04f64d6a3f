#!/usr/bin/env bash
# Builds the cargo-fuzz targets of fuzz/ and runs each for FUZZ_SECONDS (default 300) on a
# temporary corpus seeded from its committed one, fuzz/corpus/<target>/: new inputs go to the
# temporary directory, so the repository is left as it was. Any crash, panic (a broken
# property), timeout or out-of-memory fails the run; libFuzzer writes the input to
# fuzz/artifacts/<target>/ (ignored by git) and cargo fuzz prints how to reproduce it.
# CI runs it short (.ci/run); `make fuzz` runs it long.
# Usage: fuzz/run.sh [--build-only] [target...]
#
# Stable toolchain: cargo fuzz passes `-Zsanitizer=address` by default, which only a nightly
# compiler takes. With `--sanitizer none` every flag it passes is a stable `-C` flag (the
# coverage instrumentation is `-Cpasses=sancov-module`), so it builds and runs on stable.
# (fractile's crates forbid unsafe code, so AddressSanitizer would only watch dependencies.)
# Nothing here needs RUSTC_BOOTSTRAP or a nightly toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-300}
# The workspace's target directory, in a subdirectory: other RUSTFLAGS, other artifacts.
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
flags=(--fuzz-dir fuzz --sanitizer none --target-dir "$target_dir")

command -v cargo-fuzz > /dev/null || {
  echo "cargo-fuzz is required: cargo install --locked cargo-fuzz@0.13.2" >&2
  exit 1
}
# fuzz/ is its own workspace with its own lock file: refuse a stale one rather than let the
# build rewrite it.
if ! cargo metadata --locked --manifest-path fuzz/Cargo.toml --format-version 1 > /dev/null; then
  echo "fuzz/Cargo.lock is out of date: run \`cargo metadata --manifest-path fuzz/Cargo.toml" \
    "--format-version 1 > /dev/null\` and commit fuzz/Cargo.lock" >&2
  exit 1
fi

build_only=false
if [ "${1:-}" = --build-only ]; then build_only=true; shift; fi
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz); fi

started=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "fuzz build: $(($(date +%s) - started)) s"
if $build_only; then exit 0; fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for target in "${targets[@]}"; do
  [ -d "fuzz/corpus/$target" ] || { echo "no corpus fuzz/corpus/$target" >&2; exit 1; }
  mkdir -p "$work/$target"
  echo "=== fuzzing $target for ${seconds} s"
  # The first directory receives new inputs; the committed corpus is only read. libFuzzer's
  # progress lines go to a log: its final statistics are shown, and on a failure its end
  # (the input, the panic, how to reproduce).
  if cargo fuzz run "${flags[@]}" "$target" "$work/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 > "$work/$target.log" 2>&1; then
    grep -E '^(Done|stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb|new_units_added))' \
      "$work/$target.log" || true
  else
    tail -n 60 "$work/$target.log"
    failed+=("$target")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found failures in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzzed ${targets[*]} for ${seconds} s each: no failure"
