#!/usr/bin/env bash
# Miss latency, rendered in the api (embedded mode) against rendered by a worker through
# RabbitMQ and Redis (api + worker), on the same machine and the same tiles: every request a
# different zoom-10 tile near the set (loadtests/unique-tiles.lua), wrk with a few
# connections. The two paths are measured in interleaved rounds, each round on tiles no
# earlier round asked for, and the queued path's time is split into its stages from each
# response's Server-Timing (the Redis miss, the claim, the publish, the broker and the
# announcement, the worker, the read of the stored tile).
#
# Usage: loadtests/miss-latency.sh [rounds] [seconds] [connections]   (default 3 10 2)
#   MISS_LATENCY_OUT=dir writes the report elsewhere (default loadtests/reports/miss-latency);
#   MISS_LATENCY_BEFORE=dir adds a third path, `queued-before`: the fractile-api and
#   fractile-worker binaries in dir (another build, for a before and after).
# Needs wrk, Redis on 127.0.0.1:6379 and RabbitMQ on 127.0.0.1:5672 (guest/guest).
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"
rounds=${1:-3}
seconds=${2:-10}
connections=${3:-2}
out=${MISS_LATENCY_OUT:-$root/loadtests/reports/miss-latency}
before=${MISS_LATENCY_BEFORE:-}
lua="$root/loadtests/unique-tiles.lua"
work=$(mktemp -d /tmp/fractile-miss.XXXXXX)
build_release
amqp="amqp://guest:guest@127.0.0.1:5672/%2f"

# Each path its own processes and prefix; the apis stay up across the rounds (every round
# asks for new tiles, so nothing a round cached is asked for again).
targets=(in-process queued)
start fractile-api 19680 "$work/in-process.log" FRACTILE_LISTEN=127.0.0.1:18680 FRACTILE_RENDER_THREADS=2
declare -A port=([in-process]=18680 [queued]=18681 [queued-before]=18683)
queued_path() { # NAME ADMIN_BASE PREFIX
  local shared=(FRACTILE_REDIS_URL=redis://127.0.0.1:6379 "FRACTILE_AMQP_URL=$amqp"
                "FRACTILE_KEY_PREFIX=$3" "FRACTILE_QUEUE_PREFIX=$3")
  forget_prefix "$3"
  start fractile-worker $(($2 + 1)) "$work/$1-worker.log" "${shared[@]}" FRACTILE_RENDER_THREADS=2
  start fractile-api "$2" "$work/$1-api.log" "${shared[@]}" "FRACTILE_LISTEN=127.0.0.1:${port[$1]}"
}
queued_path queued 19681 loadtest-miss.
if [ -n "$before" ]; then
  mkdir -p "$work/before"
  cp "$before/fractile-api" "$before/fractile-worker" "$work/before/"
  this_bin=$bin bin=$work/before
  queued_path queued-before 19683 loadtest-miss-before.
  bin=$this_bin
  targets+=(queued-before)
fi

printf 'round\ttarget\trequests_per_s\tp50\tp99\tcpu_s\trequests_per_cpu_s\n' > "$work/rounds.tsv"
for round in $(seq 1 "$rounds"); do
  first_tile=$((round * 40000))  # a round at 2 connections asks for well under 40,000 tiles
  for target in "${targets[@]}"; do
    result=$(checked_wrk -t1 -c"$connections" -d"${seconds}s" --latency -s "$lua" \
      "http://127.0.0.1:${port[$target]}" -- "$first_tile" "$work/timing-$target-$round.txt")
    # The CPU column is not meaningful here (several processes); wrk_row wants one.
    wrk_row "$round" "$target" "$seconds" 1 <<< "$result" >> "$work/rounds.tsv"
    tail -n 1 "$work/rounds.tsv"
  done
done
for target in "${targets[@]:1}"; do
  curl -fsS "http://127.0.0.1:$((${port[$target]} + 1000))/metrics" \
    | grep -E '^render_job_confirm_seconds_(sum|count)|^render_jobs_published_total' > "$work/metrics-$target.txt"
done

mkdir -p "$out"
cut -f1-5 "$work/rounds.tsv" > "$out/rounds.tsv"
python3 - "$work" "$out" "$rounds" "$seconds" "$connections" "$(lscpu | sed -n 's/^Model name: *//p')" "${targets[@]}" <<'PY'
import csv, glob, re, statistics, sys
work, out, rounds, seconds, conns, cpu, *targets = sys.argv[1:]
rows = list(csv.DictReader(open(f"{work}/rounds.tsv"), delimiter="\t"))
def ms(v):
    return float(v[:-2]) if v.endswith("ms") else float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-1]) * 1000
def med(t, f, conv=float):
    return statistics.median(conv(r[f]) for r in rows if r["target"] == t)
p50 = {t: med(t, "p50", ms) for t in targets}
p99 = {t: med(t, "p99", ms) for t in targets}
lines = [
    "# Miss latency: rendered in the api against rendered by a worker",
    "",
    f"wrk, 1 thread, {conns} connections, every request a different zoom-10 tile near the set "
    "(`loadtests/unique-tiles.lua`); `in-process`: the api in embedded mode, 2 render threads; "
    "`queued`: api + one worker with 2 render threads + Redis and RabbitMQ, all on this machine's "
    f"cores. {rounds} interleaved rounds of {seconds} s, each on tiles no earlier round asked for; "
    f"medians of the rounds. CPU: {cpu}.",
    "",
    "| path | requests/s | p50 | p99 | p50 over in-process | p99 over in-process | "
    "same, round by round |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
]
def paired(t, f):
    """Median over the rounds of t's figure less in-process's in the same round: the rounds
    are interleaved so that a drift of the machine's speed hits both paths alike."""
    by = {(r["round"], r["target"]): ms(r[f]) for r in rows}
    return statistics.median(v - by[(rnd, "in-process")] for (rnd, tt), v in by.items() if tt == t)
for t in targets:
    lines.append(f"| {t} | {med(t, 'requests_per_s'):.0f} | {p50[t]:.2f} ms | {p99[t]:.2f} ms | "
                 f"{p50[t] - p50['in-process']:+.2f} ms | {p99[t] - p99['in-process']:+.2f} ms | "
                 f"p50 {paired(t, 'p50'):+.2f} ms, p99 {paired(t, 'p99'):+.2f} ms |")

# Server-Timing stages of the queued responses (status 200, served by a worker).
stage_names = ["l2", "claim", "publish", "transit", "worker", "queue", "render", "fetch", "wait", "total"]
about = {
    "l2": "Redis lookup that missed",
    "claim": "render claim (`SET NX`)",
    "publish": "publish call (not its confirm)",
    "transit": "broker (publish to delivery) and announcement (store to pub/sub message), by difference",
    "worker": "worker, delivery to tile ready (its checks, a render thread, the render)",
    "queue": "wait for one of the api's render threads",
    "render": "the render (for a worker's tile: part of `worker`)",
    "fetch": "read of the stored tile after the announcement",
    "wait": "claim to tile",
    "total": "the whole request in the api",
}
for t in targets:
    stages = {s: [] for s in stage_names}
    served = 0
    for path in sorted(glob.glob(f"{work}/timing-{t}-[0-9]*.txt")):
        for line in open(path):
            status, _, header = line.rstrip("\n").partition("\t")
            # A queued path's tiles from a worker (`wait`), the in-process path's renders.
            if status != "200" or ("wait;" if t != "in-process" else "render;") not in header:
                continue
            served += 1
            for part in header.split(","):
                m = re.match(r'\s*([a-z0-9]+)(?:;desc="[^"]*")?;dur=([0-9.]+)', part)
                if m and m.group(1) in stages:
                    stages[m.group(1)].append(float(m.group(2)))
    lines += ["", f"### Where a `{t}` miss's time goes ({served} responses; Server-Timing)", "",
              "| stage | p50 | p90 | p99 | what |", "| --- | ---: | ---: | ---: | --- |"]
    for s in stage_names:
        v = sorted(stages[s])
        if not v:
            if t != "in-process" and s != "queue":
                lines.append(f"| {s} | | | | {about[s]} (not reported by this build) |")
            continue
        q = lambda p: v[min(len(v) - 1, int(p * len(v)))]
        lines.append(f"| {s} | {q(0.5):.3f} ms | {q(0.9):.3f} ms | {q(0.99):.3f} ms | {about[s]} |")
    if t == "in-process":
        continue
    metrics = dict(l.split() for l in open(f"{work}/metrics-{t}.txt") if l.startswith("render_job_confirm"))
    count = float(metrics.get("render_job_confirm_seconds_count", 0))
    if count:
        mean = float(metrics["render_job_confirm_seconds_sum"]) / count * 1000
        lines.append(f"\nThe broker's confirm of a publish (beside the wait, not in it): mean {mean:.2f} ms "
                     f"over {count:.0f} jobs (`render_job_confirm_seconds`).")
lines += ["", f"Every round: [rounds.tsv](rounds.tsv). Command: `loadtests/miss-latency.sh {rounds} {seconds} {conns}`."]
open(f"{out}/README.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
stop_all
forget_prefix loadtest-miss.
[ -z "$before" ] || forget_prefix loadtest-miss-before.
rm -rf "$work"
