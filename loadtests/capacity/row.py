#!/usr/bin/env python3
"""One table row of api-one-core.sh from a fractile-load results.json, the in-flight sample
(sample.py's JSON), the api's CPU-seconds and wall seconds over the run, and the
generator's /usr/bin/time output ("elapsed user system").

The api's mean request time comes from its /metrics text at the end of the run
(http_request_duration_seconds sum / count); rate x that mean is the in-flight Little's law
predicts, a check on the 200 ms samples.

Usage: row.py RATE SECONDS API_METRICS RESULTS_JSON SAMPLE_JSON API_CPU_SECONDS WALL_SECONDS GENERATOR_TIME_FILE
"""
import json
import sys


def main():
    rate, seconds, metrics, results, sample, api_cpu, wall, gen_time = sys.argv[1:9]
    total = count = 0.0
    for line in open(metrics):
        if line.startswith("http_request_duration_seconds_sum"):
            total += float(line.split()[-1])
        elif line.startswith("http_request_duration_seconds_count"):
            count += float(line.split()[-1])
    mean_ms = total / count * 1000 if count else float("nan")
    r = json.load(open(results))
    s = json.load(open(sample))
    api_cpu, wall = float(api_cpu), float(wall)
    elapsed, user, system = (float(v) for v in open(gen_time).read().split()[-3:])
    status = r["status_mix"]
    ok = sum(v for k, v in status.items() if k in ("2xx", "3xx"))
    cache = r["cache_mix"]
    cache_text = ", ".join(f"{k} {v}" for k, v in sorted(cache.items()))
    lat = r["ok_latency"]
    print(f"| {rate} | {seconds} | {r['sent']} | {r['dropped_by_generator']} | {r['goodput_per_s']:.0f} "
          f"| {lat['p50']:.1f} | {lat['p99']:.1f} | {status.get('503', 0)} | {r['errors']} "
          f"| {api_cpu / wall:.2f} | {ok / api_cpu:.0f} | {s['in_flight_mean']:.1f} "
          f"| {s['in_flight_max']:.0f} | {mean_ms:.3f} | {r['goodput_per_s'] * mean_ms / 1000:.2f} "
          f"| {(user + system) / elapsed:.2f} | {cache_text} |")


if __name__ == "__main__":
    main()
