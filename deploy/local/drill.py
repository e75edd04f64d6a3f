"""The alert drill: causes each fault on the local topology (deploy/local/start.sh, fault
injection on) and checks, through Prometheus's HTTP API, that the expressions of the alerts
written for it become true within a bound and that no other page's expression does.

Each fault starts from a clean state: a fresh Prometheus (a new, empty TSDB on the same
port and config), so no window still holds the previous fault. The expressions are
evaluated, not the alerts: the `for:` clauses and the burn-rate alerts' long windows would
take hours, and their timing is `promtool test rules`'s job (deploy/prometheus/*.test.yml).
Browse-like traffic (cached tiles and new ones) runs through nginx all along.

Usage (deploy/local/drill.sh runs it): drill.py RUN_DIR PROMETHEUS_PORT LB_URL REPORT [FAULT...]
Faults: errors, latency, no-workers, redis-paused, broker-stopped, overload (default: all).
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = [ROOT / "deploy/prometheus/alerts.yml", ROOT / "deploy/prometheus/slo-rules.yml"]
POLL = 5
TIMEOUT = 5


def http(method: str, url: str, body: dict | None = None, token: str | None = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
        return r.read()


class Stack:
    """The running local topology, from its run folder's pid list."""

    def __init__(self, run: Path, prometheus_port: int) -> None:
        self.run = run
        self.port = prometheus_port
        self.url = f"http://127.0.0.1:{prometheus_port}"
        self.pids = [tuple(line.split()) for line in (run / "pids").read_text().splitlines()]
        self.token = os.environ["ADMIN_TOKEN"]
        self.apis = sorted(n for n, _ in self.pids if n.startswith("api-"))
        self.workers = sorted(n for n, _ in self.pids if n.startswith("worker-"))
        self.generation = 0

    def pid(self, name: str) -> int:
        return int([p for n, p in self.pids if n == name][-1])

    def admin(self, name: str) -> str:
        kind, n = name.split("-")
        # start.sh's admin ports: api-N on 19080 + N, worker-N on 19090 + N.
        return f"http://127.0.0.1:{(19080 if kind == 'api' else 19090) + int(n)}"

    def faults(self, names: list[str], body: dict | None) -> None:
        for name in names:
            if body is None:
                http("DELETE", f"{self.admin(name)}/faults", token=self.token)
            else:
                http("PUT", f"{self.admin(name)}/faults", body, token=self.token)

    def signal(self, names: list[str], sig: int) -> None:
        for name in names:
            os.kill(self.pid(name), sig)

    def fresh_prometheus(self) -> None:
        """Replaces Prometheus by one with an empty TSDB, and waits for every target."""
        old = self.pid("prometheus")
        try:
            os.kill(old, signal.SIGTERM)
            for _ in range(300):
                os.kill(old, 0)
                time.sleep(0.1)
            os.kill(old, signal.SIGKILL)
        except ProcessLookupError:
            pass  # gone: its port is free
        self.generation += 1
        data = self.run / "prometheus" / f"drill-{self.generation}"
        # An earlier drill's TSDB in the same run folder would hold its faults.
        shutil.rmtree(data, ignore_errors=True)
        log = open(self.run / "prometheus.log", "ab")
        proc = subprocess.Popen(
            ["prometheus", f"--config.file={self.run}/prometheus/prometheus.yml",
             f"--storage.tsdb.path={data}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log, stderr=log)
        self.pids.append(("prometheus", str(proc.pid)))
        with open(self.run / "pids", "a") as f:
            f.write(f"prometheus {proc.pid}\n")
        want = len(self.apis) + len(self.workers) + 2  # and the edge (mtail), and itself
        deadline = time.time() + 60
        while time.time() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the fresh Prometheus exited ({proc.returncode}): prometheus.log")
            try:
                flags = json.loads(http("GET", f"{self.url}/api/v1/status/flags"))["data"]
                fresh = flags.get("storage.tsdb.path") == str(data)
                if fresh and len(self.query("up == 1")) == want:
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.5)
        raise SystemExit("the fresh Prometheus did not see every target up in 60 s")

    def query(self, expr: str) -> list:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        return json.loads(http("GET", url))["data"]["result"]

    def ready(self) -> bool:
        for name in self.apis + self.workers:
            try:
                http("GET", f"{self.admin(name)}/readyz")
            except (OSError, urllib.error.URLError):
                return False
        return True


def traffic(lb: str, stop: threading.Event) -> None:
    """About 20 requests a second: four in five of 16 hot tiles, the rest new ones (zoom 8
    tiles over the set, 22,752 of them: a few milliseconds of rendering each)."""
    rng = random.Random()
    while not stop.is_set():
        if rng.random() < 0.8:
            z, x, y = 4, rng.randrange(4), rng.randrange(4)
        else:
            z, x, y = 8, rng.randrange(48, 206), rng.randrange(56, 200)
        try:
            http("GET", f"{lb}/tiles/{z}/{x}/{y}.png")
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)


def alerts() -> tuple[dict[tuple[str, str], str], dict[str, str]]:
    """(alert, severity) -> expression, for every alerting rule; and alert -> the file name
    of its runbook, from the rule's own `runbook_url`."""
    found, runbooks = {}, {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    found[(rule["alert"], rule["labels"]["severity"])] = rule["expr"]
                    url = rule["annotations"]["runbook_url"]
                    runbooks[rule["alert"]] = url.rsplit("/", 1)[-1]
    return found, runbooks


class Flood:
    """Many connections through nginx, each asking for a new tile the moment the last one
    was answered (wrk with loadtests/unique-tiles.lua): more misses than the fleet renders."""

    def __init__(self, lb: str, connections: int) -> None:
        self.lb, self.connections, self.proc = lb, connections, None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["wrk", "-t1", f"-c{self.connections}", "-d600s", "--timeout", "15s",
             "-s", str(ROOT / "loadtests/unique-tiles.lua"), self.lb],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def end(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def faults(stack: Stack, lb: str) -> dict:
    """Each fault: what starts it, what ends it, the alerts it must make true (alert,
    severity), the other pages it may also cause (its consequences), and the bound."""
    flood = Flood(lb, 512)
    slo_pages = [("TileAvailabilityBudgetBurn", "page"), ("TileHitLatencyBudgetBurn", "page"),
                 ("TileMissLatencyBudgetBurn", "page")]
    return {
        "errors": dict(
            what="half the tile responses 500 (fault tile_error_ratio)",
            start=lambda: stack.faults(stack.apis, {"tile_error_ratio": 0.5, "duration_s": 600}),
            end=lambda: stack.faults(stack.apis, None),
            expect=[("TileAvailabilityBudgetBurn", "page")], allowed=[], bound=120),
        "latency": dict(
            what="1.5 s added to every tile (fault tile_latency_ms)",
            start=lambda: stack.faults(stack.apis, {"tile_latency_ms": 1500, "duration_s": 600}),
            end=lambda: stack.faults(stack.apis, None),
            expect=[("TileHitLatencyBudgetBurn", "page"), ("TileMissLatencyBudgetBurn", "page"),
                    ("TileLatencyP99High", "ticket")],
            allowed=[], bound=120),
        "no-workers": dict(
            what="every worker stopped (SIGSTOP)",
            start=lambda: stack.signal(stack.workers, signal.SIGSTOP),
            end=lambda: stack.signal(stack.workers, signal.SIGCONT),
            expect=[("NoWorkers", "page")],
            allowed=[("TileAvailabilityBudgetBurn", "page"), ("TileMissLatencyBudgetBurn", "page")],
            bound=90),
        "redis-paused": dict(
            what="the cache Redis paused (SIGSTOP)",
            start=lambda: stack.signal(["redis"], signal.SIGSTOP),
            end=lambda: stack.signal(["redis"], signal.SIGCONT),
            expect=[("RedisBreakerOpen", "ticket")], allowed=slo_pages, bound=90),
        "broker-stopped": dict(
            what="RabbitMQ stopped (rabbitmqctl stop_app)",
            start=lambda: subprocess.run(["rabbitmqctl", "--quiet", "stop_app"], check=True),
            end=lambda: subprocess.run(["rabbitmqctl", "--quiet", "start_app"], check=True),
            expect=[("RenderQueueUnusable", "ticket")], allowed=slo_pages, bound=90),
        "overload": dict(
            what="a flood of new tiles through nginx (wrk, 512 connections)",
            start=flood.start, end=flood.end,
            expect=[("TileAvailabilityBudgetBurn", "page"), ("LoadSheddingSustained", "ticket")],
            allowed=slo_pages, bound=120),
    }


def drill(stack: Stack, fault: dict, rules: dict, runbooks: dict) -> tuple[list, list]:
    stack.fresh_prometheus()
    time.sleep(15)  # a baseline of good traffic in every window
    pages = [k for k in rules if k[1] == "page"]
    started = time.time()
    fault["start"]()
    became: dict = {}
    stray: set = set()
    try:
        while time.time() - started < fault["bound"]:
            time.sleep(POLL)
            for key, expr in rules.items():
                if stack.query(expr):
                    if key in fault["expect"]:
                        became.setdefault(key, round(time.time() - started))
                    elif key in pages and key not in fault["allowed"]:
                        stray.add(key)
            if len(became) == len(fault["expect"]):
                # Watch a little longer for stray pages, then stop.
                time.sleep(POLL)
                break
    finally:
        fault["end"]()
    deadline = time.time() + 60
    while not stack.ready() and time.time() < deadline:
        time.sleep(1)
    link = "[{0}](../../../docs/runbooks/{0})".format
    rows = [(fault["what"], f"{k[0]} ({k[1]})", became.get(k), link(runbooks[k[0]]))
            for k in fault["expect"]]
    return rows, sorted(stray)


def main() -> int:
    run, port, lb, report, *chosen = sys.argv[1:]
    stack = Stack(Path(run), int(port))
    rules, runbooks = alerts()
    table = faults(stack, lb)
    chosen = chosen or list(table)
    unknown = [c for c in chosen if c not in table]
    if unknown:
        raise SystemExit(f"no such fault: {', '.join(unknown)} (faults: {', '.join(table)})")
    stop = threading.Event()
    workers = [threading.Thread(target=traffic, args=(lb, stop), daemon=True) for _ in range(4)]
    for w in workers:
        w.start()
    results, problems = [], []
    try:
        for name in chosen:
            print(f"== {name}", flush=True)
            rows, stray = drill(stack, table[name], rules, runbooks)
            for row in rows:
                print(f"   {row[1]}: {'true after ' + str(row[2]) + ' s' if row[2] is not None else 'NEVER TRUE'}", flush=True)
                if row[2] is None:
                    problems.append(f"{name}: {row[1]} never became true in {table[name]['bound']} s")
            for key in stray:
                print(f"   unrelated page true: {key[0]}", flush=True)
                problems.append(f"{name}: the unrelated page {key[0]} became true")
            results.extend(rows)
    finally:
        stop.set()
    lines = ["| fault | alert that must fire (its expression true) | true after | runbook |",
             "| --- | --- | ---: | --- |"]
    for name, alert, after, book in results:
        lines.append(f"| {name} | {alert} | {str(after) + ' s' if after is not None else 'never'} | {book} |")
    Path(report).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    for p in problems:
        print(f"FAILED: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
