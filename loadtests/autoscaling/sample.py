#!/usr/bin/env python3
"""Runs the load generator and samples, once a second, the metrics autoscalers read.

    sample.py --out series.json --api 127.0.0.1:19081 ... --worker 127.0.0.1:19091 ...
              --worker-log worker-1.log -- fractile-load run --scenario browse --profile ...

Per api: http_requests_in_flight from its admin /metrics (KEDA's Prometheus trigger), CPU
cores from /proc/<pid>/stat (what the HPA's CPU metric measures; the process's own
process_cpu_seconds_total counts whole seconds only, too coarse for 1 s steps), render jobs
published from /metrics. Per worker:
renders per second and jobs in progress. From RabbitMQ's management API (what KEDA's
RabbitMQ scaler reads over HTTP): ready and unacknowledged messages of the render queues,
and their ack rate. Everything is written as series.json for the autoscaler model, with t
counted from the generator's start and the generator's scheduled rate at each t.

Python 3 standard library only. It never sends load itself: the generator does, bounded by
its own profile; sampling stops when the generator exits.
"""

import argparse
import base64
import concurrent.futures
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

# A scrape slower than this counts as failed for that tick: the next tick must not slip.
FETCH_TIMEOUT_S = 0.8
# `name{labels} value` or `name value` (Prometheus text format; timestamps are not used).
SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text → list of (name, labels, value)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE_LINE.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        samples.append((name, dict(LABEL.findall(labels or "")), number))
    return samples


def total(samples, name, **labels):
    """Sum of a metric over its label sets, keeping those matching `labels`."""
    return sum(
        v
        for n, ls, v in samples
        if n == name and all(ls.get(k) == want for k, want in labels.items())
    )


def fetch(url, auth=None):
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + auth)
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response:
        return response.read().decode()


def parse_profile(command):
    """The (seconds, rate) points of --profile in the generator's command."""
    args = list(command)
    for i, arg in enumerate(args):
        if arg == "--profile" and i + 1 < len(args):
            spec = args[i + 1]
        elif arg.startswith("--profile="):
            spec = arg.split("=", 1)[1]
        else:
            continue
        return [tuple(float(x) for x in p.split(":")) for p in spec.split(",")]
    sys.exit("sample.py: the generator's command has no --profile")


def option(command, name):
    for i, arg in enumerate(command):
        if arg == name and i + 1 < len(command):
            return command[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def rate_at(points, t):
    """The profile's rate at t, as fractile-load computes it: straight lines between the
    points, the first rate before the first point and the last after the last."""
    if t <= points[0][0]:
        return points[0][1]
    for (t0, r0), (t1, r1) in zip(points, points[1:]):
        if t <= t1:
            return r0 + (r1 - r0) * (t - t0) / (t1 - t0)
    return points[-1][1]


def worker_settings(log_path):
    """Render threads and total prefetch from the worker's `consuming` log line."""
    with open(log_path, encoding="utf-8") as log:
        for line in log:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            fields = event.get("fields", event)
            if fields.get("message") == "consuming":
                prefetch = fields["interactive_prefetch"] + fields["bulk_prefetch"]
                return fields["threads"], prefetch
    sys.exit(f"sample.py: no `consuming` line in {log_path}")


def machine():
    cores = os.cpu_count() or 0
    mem_kb = 0
    with open("/proc/meminfo", encoding="utf-8") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    return f"{cores} cores, {mem_kb / 1048576:.0f} GiB memory"


def commit(root):
    def git(*args):
        out = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    # Like the generator's report: say so when the code measured is not exactly a commit.
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "crates", "loadtests/src")
    return f"{head} with uncommitted changes" if dirty else head


def process_cpu_seconds(pid):
    """utime + stime of a process, in seconds (10 ms resolution)."""
    with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
        # The command name (field 2) may hold spaces: count fields after its closing ")".
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_jiffies():
    """(busy, total) CPU jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat", encoding="utf-8") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class Sampler:
    """Reads every endpoint once per tick and turns counters into per-second rates over
    the time since that endpoint's previous successful read."""

    def __init__(self, args):
        self.apis = [f"http://{a}/metrics" for a in args.api]
        self.api_pids = args.api_pid
        self.cpu_last = {}  # pid -> (time, seconds) of the last read
        self.cpu_cores = {}  # pid -> cores over the last step
        self.workers = [f"http://{w}/metrics" for w in args.worker]
        vhost = urllib.parse.quote(args.vhost, safe="")
        self.queues = [
            f"{args.rabbitmq}/api/queues/{vhost}/{urllib.parse.quote(q, safe='')}"
            for q in args.queue
        ]
        user, password = os.environ["RABBITMQ_USER"], os.environ["RABBITMQ_PASSWORD"]
        self.auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)
        self.last = {}  # url -> (time, parsed reading): the last successful read
        self.previous = {}  # url -> (time, parsed reading): the one before it
        self.failed = 0
        self.reads = 0
        self.cpu = busy_jiffies()
        self.cpu_time = time.monotonic()

    def poll_cpu(self):
        now = time.monotonic()
        for pid in self.api_pids:
            try:
                seconds = process_cpu_seconds(pid)
            except OSError:
                # The process exited: it uses no CPU.
                self.cpu_cores[pid] = 0.0
                continue
            if pid in self.cpu_last:
                t0, s0 = self.cpu_last[pid]
                self.cpu_cores[pid] = (seconds - s0) / max(now - t0, 1e-3)
            self.cpu_last[pid] = (now, seconds)

    def _read(self, url):
        auth = self.auth if "/api/queues/" in url else None
        return fetch(url, auth)

    def poll(self):
        """One round of reads; keeps the last good reading of every endpoint."""
        urls = self.apis + self.workers + self.queues
        futures = {url: self.pool.submit(self._read, url) for url in urls}
        self.poll_cpu()
        now = time.monotonic()
        for url, future in futures.items():
            self.reads += 1
            try:
                body = future.result(timeout=FETCH_TIMEOUT_S + 0.2)
                reading = json.loads(body) if "/api/queues/" in url else parse_metrics(body)
            except (OSError, ValueError, urllib.error.URLError, concurrent.futures.TimeoutError):
                # Not answered in time: the rates below span two ticks next time.
                self.failed += 1
                continue
            if url in self.last:
                self.previous[url] = self.last[url]
            self.last[url] = (now, reading)

    def counter_rate(self, url, name, **labels):
        if url not in self.last or url not in self.previous:
            return 0.0
        (t1, now), (t0, before) = self.last[url], self.previous[url]
        if t1 <= t0:
            return 0.0
        # A restarted process resets its counters; a negative delta is not a rate.
        return max(0.0, total(now, name, **labels) - total(before, name, **labels)) / (t1 - t0)

    def gauge(self, url, name):
        return total(self.last[url][1], name) if url in self.last else 0.0

    def queue_field(self, url, *path):
        value = self.last.get(url, (0, {}))[1]
        for key in path:
            value = value.get(key, {}) if isinstance(value, dict) else {}
        return value if isinstance(value, (int, float)) else 0

    def machine_busy_cores(self):
        busy, all_ = busy_jiffies()
        cores = os.cpu_count() or 1
        used = (busy - self.cpu[0]) / max(1, all_ - self.cpu[1]) * cores
        self.cpu = (busy, all_)
        return used

    def sample(self, t, arrival_rate):
        queues = self.queues
        return {
            "t": round(t, 3),
            "arrival_rate": round(arrival_rate, 3),
            "api_in_flight": [int(self.gauge(u, "http_requests_in_flight")) for u in self.apis],
            "api_cpu_cores": [round(self.cpu_cores.get(p, 0.0), 4) for p in self.api_pids],
            "queue_ready": int(sum(self.queue_field(u, "messages_ready") for u in queues)),
            "queue_unacked": int(
                sum(self.queue_field(u, "messages_unacknowledged") for u in queues)
            ),
            "jobs_published_per_s": round(
                sum(
                    self.counter_rate(u, "render_jobs_published_total", result="ok")
                    for u in self.apis
                ),
                3,
            ),
            "jobs_completed_per_s": round(
                sum(self.queue_field(u, "message_stats", "ack_details", "rate") for u in queues),
                3,
            ),
            "renders_per_s": [round(self.counter_rate(u, "renders_total"), 3) for u in self.workers],
            "worker_jobs_in_progress": [
                int(self.gauge(u, "worker_jobs_in_progress")) for u in self.workers
            ],
        }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="series.json to write")
    parser.add_argument("--api", action="append", required=True, help="an api's admin host:port")
    parser.add_argument(
        "--api-pid", action="append", type=int, required=True,
        help="the process id of each --api, in the same order (for its CPU)",
    )
    parser.add_argument("--worker", action="append", required=True, help="a worker's admin host:port")
    parser.add_argument("--worker-log", required=True, help="a worker's JSON log (its settings)")
    parser.add_argument("--rabbitmq", default="http://127.0.0.1:15672", help="management API")
    parser.add_argument("--vhost", default="fractile-local")
    parser.add_argument(
        "--queue", action="append",
        help="queue to count (default: fractile.render.interactive.v2 and fractile.render.bulk)",
    )
    parser.add_argument("--step", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--root", default=".", help="the repository (for the commit)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the generator's command")
    args = parser.parse_args()
    args.queue = args.queue or ["fractile.render.interactive.v2", "fractile.render.bulk"]
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("the generator's command goes after --")
    if len(args.api_pid) != len(args.api):
        parser.error("give one --api-pid per --api")

    points = parse_profile(command)
    seconds = option(command, "--seconds")
    # The generator stops arriving at --seconds, or at the profile's last point.
    end = float(seconds) if seconds else points[-1][0]
    threads, prefetch = worker_settings(args.worker_log)
    sampler = Sampler(args)

    # A reading before the start, so the first sample's rates cover a whole step.
    sampler.poll()
    time.sleep(args.step)
    start = time.monotonic()
    generator = subprocess.Popen(command)
    samples, machine_cores = [], []
    tick = 0
    while True:
        due = start + tick * args.step
        time.sleep(max(0.0, due - time.monotonic()))
        t = time.monotonic() - start
        sampler.poll()
        samples.append(sampler.sample(t, rate_at(points, t) if t < end else 0.0))
        machine_cores.append(round(sampler.machine_busy_cores(), 3))
        s = samples[-1]
        print(
            f"t={s['t']:6.1f} rate={s['arrival_rate']:6.1f} in_flight={s['api_in_flight']} "
            f"cpu={s['api_cpu_cores']} queue={s['queue_ready']}+{s['queue_unacked']} "
            f"renders/s={s['renders_per_s']} machine={machine_cores[-1]:.2f} cores",
            file=sys.stderr,
            flush=True,
        )
        if generator.poll() is not None:
            break
        tick += 1

    series = {
        "command": shlex.join(command),
        "machine": machine(),
        "commit": commit(args.root),
        "step_seconds": args.step,
        "api_replicas": len(args.api),
        "worker_replicas": len(args.worker),
        "worker_render_threads": threads,
        "worker_prefetch": prefetch,
        "samples": samples,
    }
    with open(args.out, "w", encoding="utf-8") as out:
        # One sample a line: readable, and diffs of a rerun stay line by line.
        head = json.dumps({k: v for k, v in series.items() if k != "samples"}, indent=1)
        lines = ",\n".join("  " + json.dumps(s) for s in samples)
        out.write(head[:-2] + ',\n "samples": [\n' + lines + "\n ]\n}\n")
    # The machine's busy cores per sample, beside the series (every process on it counts).
    with open(os.path.join(os.path.dirname(args.out), "machine-cpu.json"), "w", encoding="utf-8") as out:
        json.dump({"t": [s["t"] for s in samples], "busy_cores": machine_cores}, out)
        out.write("\n")
    print(
        f"sample.py: {len(samples)} samples, {sampler.failed} of {sampler.reads} reads "
        f"not answered within {FETCH_TIMEOUT_S} s; generator exit {generator.returncode}",
        file=sys.stderr,
    )
    return generator.returncode


if __name__ == "__main__":
    sys.exit(main())
