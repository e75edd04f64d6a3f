#!/usr/bin/env bash
# Start-up time of the release binaries, from exec to the first 200 of /readyz: fractile-api
# in distributed mode and fractile-worker, Redis and RabbitMQ up, 10 starts each (RUNS).
# Needs Redis (6379) and RabbitMQ (5672, guest/guest). Bounded: under a minute.
# Usage: loadtests/capacity/startup.sh
# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "$0")/../common.sh"
here="$root/loadtests/capacity"
runs=${RUNS:-10}
build_release
prefix="capacity-startup."
export FRACTILE_REDIS_URL=redis://127.0.0.1:6379 FRACTILE_AMQP_URL='amqp://guest:guest@127.0.0.1:5672/%2f' \
  FRACTILE_KEY_PREFIX=$prefix FRACTILE_QUEUE_PREFIX=$prefix
echo "== fractile-api, distributed mode"
FRACTILE_LISTEN=127.0.0.1:18930 python3 "$here/startup.py" "$bin/fractile-api" 19930 "$runs"
echo "== fractile-worker"
python3 "$here/startup.py" "$bin/fractile-worker" 19931 "$runs"
forget_prefix "$prefix"
