#!/bin/sh
# Run by the nginx image's entrypoint before nginx starts (mounted in /docker-entrypoint.d/):
# keeps the edge log, which mtail tails for the edge's metrics (nginx.conf, `access_log ...
# edge`), under 32 MB. Every 30 s, a log over the limit is truncated in place (logrotate's
# copytruncate, without the copy: the lines are counted by mtail, and the full JSON access log
# goes to stdout). nginx keeps writing at the new end (the file is opened for appending), and
# mtail, finding the file shorter than what it read, reads it again from its start; the lines
# written between mtail's last read and the truncation are lost, a second's worth at most.
log=/var/log/nginx/edge/edge.log
limit=$((32 * 1024 * 1024))
(
  while sleep 30; do
    size=$(stat -c %s "$log" 2> /dev/null || echo 0)
    if [ "$size" -gt "$limit" ]; then : > "$log"; fi
  done
) &
