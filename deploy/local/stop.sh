#!/usr/bin/env bash
# Stops what deploy/local/start.sh started, by the pids it recorded: SIGTERM (the api and
# workers drain), then SIGKILL for anything still running after 30 s. The stack's RabbitMQ
# vhost is deleted (its queues with it), and its user if start.sh created it; RabbitMQ
# itself is stopped only if start.sh started it.
set -uo pipefail
run=${FRACTILE_LOCAL_RUN:-/tmp/fractile-local}
vhost=${FRACTILE_LOCAL_VHOST:-fractile-local}
[ -f "$run/pids" ] || { echo "nothing recorded in $run/pids"; exit 0; }
while read -r name pid; do
  kill -TERM "$pid" 2> /dev/null && echo "stopping $name ($pid)"
done < "$run/pids"
for _ in $(seq 1 300); do
  alive=0
  while read -r _ pid; do kill -0 "$pid" 2> /dev/null && alive=1; done < "$run/pids"
  [ $alive -eq 0 ] && break
  sleep 0.1
done
while read -r name pid; do
  kill -0 "$pid" 2> /dev/null && { echo "killing $name ($pid)"; kill -KILL "$pid"; }
done < "$run/pids"
if rabbitmqctl --quiet status > /dev/null 2>&1; then
  rabbitmqctl --quiet delete_vhost "$vhost" > /dev/null 2>&1 && echo "deleted vhost $vhost"
  if [ -s "$run/rabbitmq-user-created-here" ]; then
    user=$(cat "$run/rabbitmq-user-created-here")
    rabbitmqctl --quiet delete_user "$user" > /dev/null 2>&1 && echo "deleted rabbitmq user $user"
  fi
fi
rm -f "$run/rabbitmq-user-created-here"
if [ -f "$run/rabbitmq-started-here" ]; then
  rabbitmqctl --quiet stop > /dev/null 2>&1 || true
  rm -f "$run/rabbitmq-started-here"
fi
rm -f "$run/pids"
echo "stopped"
