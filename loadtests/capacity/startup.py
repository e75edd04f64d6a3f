#!/usr/bin/env python3
"""Start-up time of a fractile binary: from exec to the first 200 of /readyz on its admin
port, polled every 2 ms. Runs it N times (SIGTERM and wait between runs) and prints each
time, the median and the maximum. The environment (FRACTILE_*) comes from the caller.

Usage: startup.py BINARY ADMIN_PORT RUNS
"""
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

POLL = 0.002
GIVE_UP = 30.0


def ready(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=0.5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main():
    binary, port, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    env = dict(os.environ, FRACTILE_ADMIN_LISTEN=f"127.0.0.1:{port}", RUST_LOG="warn")
    times = []
    for _ in range(runs):
        if ready(port):
            sys.exit(f"something already answers on admin port {port}")
        started = time.monotonic()
        process = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            while not ready(port):
                if process.poll() is not None:
                    sys.exit(f"{binary} exited with {process.returncode} before it was ready")
                if time.monotonic() - started > GIVE_UP:
                    sys.exit(f"{binary} not ready after {GIVE_UP} s")
                time.sleep(POLL)
            times.append((time.monotonic() - started) * 1000)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    print("runs (ms): " + ", ".join(f"{t:.0f}" for t in times))
    print(f"median: {statistics.median(times):.0f} ms, max: {max(times):.0f} ms")


if __name__ == "__main__":
    main()
