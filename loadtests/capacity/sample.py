#!/usr/bin/env python3
"""Samples an api's admin /metrics every 200 ms for a fixed time and prints the mean and
maximum of http_requests_in_flight as JSON (the autoscaler's per-pod signal).

Usage: sample.py ADMIN_URL SECONDS      e.g. sample.py http://127.0.0.1:19900/metrics 20
"""
import json
import sys
import time
import urllib.request

INTERVAL = 0.2


def in_flight(url):
    with urllib.request.urlopen(url, timeout=1) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("http_requests_in_flight "):
                return float(line.split()[1])
    return None


def main():
    url, seconds = sys.argv[1], float(sys.argv[2])
    values, failures = [], 0
    start = time.monotonic()
    tick = start
    while tick - start < seconds:
        try:
            value = in_flight(url)
            if value is not None:
                values.append(value)
        except OSError:
            failures += 1
        tick += INTERVAL
        time.sleep(max(0.0, tick - time.monotonic()))
    print(json.dumps({
        "samples": len(values),
        "failed_samples": failures,
        "in_flight_mean": sum(values) / len(values) if values else None,
        "in_flight_max": max(values) if values else None,
    }))


if __name__ == "__main__":
    main()
