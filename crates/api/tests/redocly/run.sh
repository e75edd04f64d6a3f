#!/usr/bin/env bash
# Lints the committed OpenAPI document (crates/api/openapi.json, which a test keeps equal to
# what the code generates) with redocly's recommended rules: @redocly/cli from npm, pinned,
# installed once into a cache folder. The problems that are the contract are listed with their
# reasons in .redocly.lint-ignore.yaml; anything else fails. Needs: node and npm.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../.." && pwd)
version=2.77.0
prefix=${REDOCLY_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/fractile-redocly-$version}
if [ ! -x "$prefix/node_modules/.bin/redocly" ]; then
  mkdir -p "$prefix"
  npm install --silent --no-audit --no-fund --prefix "$prefix" "@redocly/cli@$version"
fi
cd "$root"
"$prefix/node_modules/.bin/redocly" lint --config crates/api/tests/redocly/redocly.yaml crates/api/openapi.json
