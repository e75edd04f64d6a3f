#!/usr/bin/env python3
"""Summarises a worker's /metrics text (on stdin) over a run: renders by result, renders
per second of wall time, the mean render time (sum / count of render_duration_seconds, so
renders per second per busy thread = 1 / mean), and p50/p99 estimated from the histogram
buckets with linear interpolation, as Prometheus's histogram_quantile does.

Usage: curl -s http://127.0.0.1:PORT/metrics | worker-metrics.py WALL_SECONDS WORKER_CPU_SECONDS
"""
import re
import sys


def main():
    wall, cpu = float(sys.argv[1]), float(sys.argv[2])
    renders, buckets, total, count = {}, [], 0.0, 0.0
    for line in sys.stdin:
        m = re.match(r'renders_total\{result="(\w+)"\} (\S+)', line)
        if m:
            renders[m.group(1)] = float(m.group(2))
        m = re.match(r'render_duration_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
        if m:
            buckets.append((float(m.group(1)), float(m.group(2))))
        if line.startswith("render_duration_seconds_sum "):
            total = float(line.split()[1])
        if line.startswith("render_duration_seconds_count "):
            count = float(line.split()[1])

    def quantile(q):
        rank, lower, below = q * count, 0.0, 0.0
        for bound, cumulative in buckets:
            if cumulative >= rank:
                if bound == float("inf"):
                    return lower
                inside = cumulative - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 1)
            lower, below = bound, cumulative
        return float("nan")

    ok = renders.get("ok", 0)
    mean = total / count if count else float("nan")
    print(f"renders: {', '.join(f'{k} {v:.0f}' for k, v in sorted(renders.items()))}; "
          f"ok per wall second: {ok / wall:.1f}; mean render {mean * 1000:.1f} ms "
          f"(= {1 / mean:.0f} renders/s per busy thread); p50 ~{quantile(0.5) * 1000:.1f} ms, "
          f"p99 ~{quantile(0.99) * 1000:.0f} ms (bucket estimates); worker CPU {cpu:.1f} s "
          f"= {cpu / wall:.2f} cores; ok renders per worker CPU-second {ok / cpu if cpu else 0:.0f}")


if __name__ == "__main__":
    main()
