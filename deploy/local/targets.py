"""Prints deploy/prometheus/prometheus.yml with each job's target block (between its
"# targets:begin JOB" and "# targets:end JOB" markers) replaced by static loopback targets.

Usage: targets.py PROMETHEUS_YML JOB=HOST:PORT[,HOST:PORT...] ...
"""

import sys


def main() -> None:
    path, *assignments = sys.argv[1:]
    targets = dict(a.split("=", 1) for a in assignments)
    out, skipping = [], None
    with open(path, encoding="utf-8") as f:
        for line in f:
            stripped = line.strip()
            if stripped.startswith("# targets:begin "):
                job = stripped.removeprefix("# targets:begin ")
                if job not in targets:
                    sys.exit(f"no targets given for job {job}")
                indent = line[: len(line) - len(line.lstrip())]
                hosts = ", ".join(targets.pop(job).split(","))
                out.append(f"{indent}static_configs:\n{indent}  - targets: [{hosts}]\n")
                skipping = job
            elif stripped.startswith("# targets:end "):
                skipping = None
            elif skipping is None:
                out.append(line)
    if targets:
        sys.exit(f"jobs not found in {path}: {', '.join(targets)}")
    sys.stdout.write("".join(out))


if __name__ == "__main__":
    main()
