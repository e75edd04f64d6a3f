#!/usr/bin/env python3
"""Checks of the Kubernetes manifests (k8s/) that a schema cannot make: against each other,
against the Prometheus config, and against the real fractile binaries.

Subcommands (Python 3 + PyYAML):

  static RENDERED...
      Per rendered kustomization: no two objects of one kind and name; no Deployment targeted
      by two autoscalers (a KEDA ScaledObject and an HPA, or two of either); no `replicas:` in
      a Deployment an autoscaler targets; CPU and memory requests and limits on every
      container. Prints the objects per kind.

  split RENDERED CORE_OUT CRD_OUT
      Writes the built-in objects and the custom ones (KEDA) of RENDERED to two files, for
      kubernetes-validate and the KEDA schema check respectively.

  prometheus RENDERED
      The Prometheus Deployment's --config.file and rule_files paths are where it mounts the
      ConfigMaps that hold them; then `promtool check config` of the rendered config with the
      rendered rules beside it. Debian's promtool is built without Kubernetes service
      discovery, so `kubernetes_sd_configs` blocks are replaced by static targets first.

  checkov REPORT.json ALLOW.yaml
      Applies the exceptions of ALLOW.yaml (check, optional resources, reason) to checkov's
      JSON report: fails on any other failed check, and on an exception that matched nothing.

  drift [--overlay k8s/overlays/kind] [--target-dir DIR] [--negative-fixture FILE]
      Renders the overlay and starts the debug fractile-api and fractile-worker (distributed
      mode, local Redis and RabbitMQ, loopback ports) with the env of their manifests:
      every FRACTILE_* name is one the binary accepts (`--help`); probe, admin and traffic
      ports agree with FRACTILE_ADMIN_LISTEN and FRACTILE_LISTEN; probe paths answer 200 and
      /metrics answers; grace period, probe give-up times, replicas and resources are sane;
      every metric named by an autoscaler, an alert rule or the dashboard is exported by the
      binary its `job` label names. A negative fixture (a rule file naming a metric nobody
      exports) must be rejected by the same check.

Exit status: 0 all good, 1 a check failed, 2 bad usage or a tool missing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet"}
# Metrics that no fractile binary exports, by where they come from.
FOREIGN_METRICS = {
    "up": "Prometheus (one sample per scrape target)",
    "ALERTS": "Prometheus (the state of its alerting rules)",
}
# A recording rule whose expression is a constant (the SLO rules' objective, budget, period
# and info series: `vector(0.999)`) names no metric, and needs none; any other expression
# without a metric name (an alert on `vector(1)`) is a mistake.
CONSTANT_EXPR = re.compile(r"\s*vector\(\s*[0-9.eE+-]+\s*\)\s*")
FOREIGN_PREFIXES = {"rabbitmq_": "RabbitMQ's Prometheus plugin (port 15692)"}
BINARY_JOBS = {"fractile-api": "fractile-api", "fractile-worker": "fractile-worker"}
# Environment names of the fractile containers that are not FRACTILE_* settings and not
# helpers expanded by $(NAME) in another value: the OpenTelemetry SDK's standard variables,
# which the binaries read as settings (k8s/components/tracing sets the first three). The
# static checks accept a manifest's OTEL_* name only if it is here; `drift` checks every one
# against --help like a FRACTILE_* name, and that --help lists all of these.
KNOWN_ENV = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": "OTLP/HTTP base URL (spans go to <base>/v1/traces)",
    "OTEL_TRACES_SAMPLER": "sampler name (default parentbased_always_on)",
    "OTEL_TRACES_SAMPLER_ARG": "sampler ratio, 0..1",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "full traces URL, overrides the endpoint",
    "OTEL_SERVICE_NAME": "service.name (default fractile-api / fractile-worker)",
    "OTEL_RESOURCE_ATTRIBUTES": "extra resource attributes, k=v,k2=v2",
    "OTEL_SDK_DISABLED": "true: no tracing at all",
}


class Failures:
    """Collects failed checks so one run reports all of them, not just the first."""

    def __init__(self, quiet: bool = False) -> None:
        self.items: list[str] = []
        self.passed = 0
        self.quiet = quiet

    def check(self, ok: bool, what: str) -> bool:
        if ok:
            self.passed += 1
        else:
            self.items.append(what)
            if not self.quiet:
                print(f"  FAIL {what}")
        return ok

    def summary(self, title: str) -> int:
        print(f"{title}: {self.passed} passed, {len(self.items)} failed")
        return 1 if self.items else 0


# ---------------------------------------------------------------------------------------------
# Rendered manifests


def load_docs(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def render(overlay: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], check=True, capture_output=True, text=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def name_of(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("name", "?"))


def ident(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{name_of(obj)}"


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    for d in docs:
        if d.get("kind") == kind and name_of(d) == name:
            return d
    return None


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj.get("spec", {})
    if obj.get("kind") == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    if obj.get("kind") in WORKLOAD_KINDS:
        return spec.get("template", {}).get("spec", {})
    return None


def containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from spec.get("initContainers", []) or []
    yield from spec.get("containers", []) or []


def autoscaler_targets(docs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Deployment (or other kind)/name -> the autoscalers that target it."""
    targets: dict[str, list[str]] = {}
    for d in docs:
        if d.get("kind") == "ScaledObject":
            ref = d.get("spec", {}).get("scaleTargetRef", {})
            key = f"{ref.get('kind', 'Deployment')}/{ref.get('name')}"
        elif d.get("kind") == "HorizontalPodAutoscaler":
            ref = d.get("spec", {}).get("scaleTargetRef", {})
            key = f"{ref.get('kind')}/{ref.get('name')}"
        else:
            continue
        targets.setdefault(key, []).append(ident(d))
    return targets


def fractile_containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(workload, pod spec, container) for every container running a fractile image."""
    for d in docs:
        spec = pod_spec(d)
        if spec is None:
            continue
        for c in containers(spec):
            if str(c.get("image", "")).split(":")[0].split("/")[-1] == "fractile":
                yield d, spec, c


def check_env_names(docs: list[dict[str, Any]], fails: Failures) -> None:
    """Each env name of a fractile container is a FRACTILE_* setting (checked against --help
    by `drift`), a helper another value expands with $(NAME), or in KNOWN_ENV. A container
    that exports spans (OTEL_EXPORTER_OTLP_ENDPOINT) and is restricted by a NetworkPolicy
    with Egress must be allowed out to the endpoint's port by one of them."""
    for d, _spec, c in fractile_containers(docs):
        where = f"{ident(d)} container {c.get('name')}"
        env, _ = container_env(c, docs, Failures(quiet=True), where)
        expanded = {m for e in c.get("env", []) or [] for m in re.findall(r"\$\((\w+)\)", str(e.get("value", "")))}
        for name in sorted(env):
            fails.check(name.startswith("FRACTILE_") or name in expanded or name in KNOWN_ENV,
                        f"{where}: env {name} is not a FRACTILE_* setting, not expanded by another "
                        f"value and not in KNOWN_ENV (check_manifests.py)")
        endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if not endpoint:
            continue
        m = re.match(r"^\w+://[^/:]+(?::(\d+))?", endpoint)
        port = int(m.group(1)) if m and m.group(1) else (443 if endpoint.startswith("https") else 80)
        labels = d.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}
        for pol in (x for x in docs if x.get("kind") == "NetworkPolicy"):
            sel = pol.get("spec", {}).get("podSelector") or {}
            if "Egress" not in (pol.get("spec", {}).get("policyTypes") or []) or sel.get("matchExpressions") \
                    or any(labels.get(k) != v for k, v in (sel.get("matchLabels") or {}).items()):
                continue
            if not sel.get("matchLabels"):
                continue  # default deny and DNS: every pod, opened by the pod's own policy
            rules = pol.get("spec", {}).get("egress") or []
            fails.check(any(not r.get("ports") or any(p.get("port") == port for p in r["ports"]) for r in rules),
                        f"{where}: exports spans to {endpoint}, but {ident(pol)} allows no egress to "
                        f"port {port} (list k8s/components/tracing after network-policies)")


def check_structure(docs: list[dict[str, Any]], fails: Failures) -> None:
    """The checks shared by `static` and `drift`."""
    seen: set[tuple[str, str, str]] = set()
    for d in docs:
        key = (str(d.get("apiVersion")), str(d.get("kind")), name_of(d))
        fails.check(key not in seen, f"{ident(d)} appears twice")
        seen.add(key)

    targets = autoscaler_targets(docs)
    for target, scalers in sorted(targets.items()):
        fails.check(
            len(scalers) == 1,
            f"{target} has {len(scalers)} autoscalers ({', '.join(scalers)}): they would fight",
        )
        kind, _, name = target.partition("/")
        obj = find(docs, kind, name)
        if fails.check(obj is not None, f"{', '.join(scalers)} target {target}, which is not rendered"):
            assert obj is not None
            fails.check(
                "replicas" not in obj.get("spec", {}),
                f"{target} sets `replicas:` but {', '.join(scalers)} owns the count "
                "(every apply would reset it)",
            )

    for d in docs:
        spec = pod_spec(d)
        if spec is None:
            continue
        for c in containers(spec):
            res = c.get("resources", {}) or {}
            for part in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    fails.check(
                        resource in (res.get(part) or {}),
                        f"{ident(d)} container {c.get('name')}: no {part}.{resource}",
                    )
    check_env_names(docs, fails)


def cmd_static(args: argparse.Namespace) -> int:
    fails = Failures()
    for path in args.rendered:
        docs = load_docs(Path(path))
        kinds: dict[str, int] = {}
        for d in docs:
            kinds[str(d.get("kind"))] = kinds.get(str(d.get("kind")), 0) + 1
        before = len(fails.items)
        check_structure(docs, fails)
        scalers = sorted(
            f"{t} <- {', '.join(s)}" for t, s in autoscaler_targets(docs).items()
        )
        state = "ok" if len(fails.items) == before else "FAILED"
        print(f"{Path(path).name}: {len(docs)} objects, autoscalers [{'; '.join(scalers)}]: {state}")
        if args.verbose:
            print("  " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    return fails.summary("structure")


def cmd_split(args: argparse.Namespace) -> int:
    docs = load_docs(Path(args.rendered))
    # Built-in API groups have no dot (core `v1`, `apps/v1`) or end in .k8s.io.
    def builtin(d: dict[str, Any]) -> bool:
        group = str(d.get("apiVersion", "")).rpartition("/")[0]
        return "." not in group or group.endswith(".k8s.io")

    core = [d for d in docs if builtin(d)]
    crd = [d for d in docs if not builtin(d)]
    Path(args.core_out).write_text(yaml.safe_dump_all(core, sort_keys=False), encoding="utf-8")
    Path(args.crd_out).write_text(json.dumps(crd), encoding="utf-8")
    print(f"{len(core)} built-in objects, {len(crd)} custom ({', '.join(sorted({ident(d) for d in crd})) or 'none'})")
    return 0


# ---------------------------------------------------------------------------------------------
# Prometheus config


def mounted_file(container: dict[str, Any], spec: dict[str, Any], docs: list[dict[str, Any]],
                 path: str) -> tuple[str, str] | None:
    """(ConfigMap name, key) that `path` is inside container, by its volume mounts."""
    volumes = {v.get("name"): v for v in spec.get("volumes", []) or []}
    best: tuple[int, tuple[str, str]] | None = None
    for m in container.get("volumeMounts", []) or []:
        mount = str(m.get("mountPath", "")).rstrip("/")
        if not path.startswith(mount + "/"):
            continue
        rest = path[len(mount) + 1:]
        if "/" in rest:
            continue
        cm = (volumes.get(m.get("name")) or {}).get("configMap")
        if not cm:
            continue
        cm_obj = find(docs, "ConfigMap", cm.get("name", ""))
        if cm_obj is None or rest not in (cm_obj.get("data") or {}):
            continue
        if best is None or len(mount) > best[0]:
            best = (len(mount), (cm["name"], rest))
    return best[1] if best else None


def static_targets(config: dict[str, Any]) -> int:
    """Replaces every kubernetes_sd_configs block with one static target; returns how many."""
    replaced = 0
    for job in config.get("scrape_configs", []) or []:
        if "kubernetes_sd_configs" in job:
            del job["kubernetes_sd_configs"]
            job.setdefault("static_configs", []).append({"targets": ["127.0.0.1:9"]})
            replaced += 1
    return replaced


def cmd_prometheus(args: argparse.Namespace) -> int:
    if shutil.which("promtool") is None:
        print("promtool not found (Debian package prometheus)", file=sys.stderr)
        return 2
    docs = load_docs(Path(args.rendered))
    fails = Failures()
    deploy = find(docs, "Deployment", "prometheus")
    if not fails.check(deploy is not None, "no Deployment prometheus"):
        return fails.summary("prometheus")
    assert deploy is not None
    spec = pod_spec(deploy) or {}
    container = next((c for c in spec.get("containers", []) if c.get("name") == "prometheus"), {})
    flags = [a for a in container.get("args", []) if a.startswith("--config.file=")]
    if not fails.check(len(flags) == 1, "prometheus has no --config.file= argument"):
        return fails.summary("prometheus")
    config_path = flags[0].split("=", 1)[1]
    config_ref = mounted_file(container, spec, docs, config_path)
    if not fails.check(config_ref is not None, f"{config_path} is in no mounted ConfigMap"):
        return fails.summary("prometheus")
    assert config_ref is not None
    cm = find(docs, "ConfigMap", config_ref[0]) or {}
    text = cm["data"][config_ref[1]]
    config = yaml.safe_load(text)
    print(f"--config.file {config_path} = ConfigMap {config_ref[0]} key {config_ref[1]}")

    with tempfile.TemporaryDirectory() as tmp:
        rule_files = []
        for i, rule_path in enumerate(config.get("rule_files", []) or []):
            ref = mounted_file(container, spec, docs, rule_path)
            if fails.check(ref is not None, f"rule file {rule_path} is in no mounted ConfigMap"):
                assert ref is not None
                print(f"rule_files {rule_path} = ConfigMap {ref[0]} key {ref[1]}")
                local = Path(tmp) / f"rules-{i}-{ref[1]}"
                local.write_text((find(docs, "ConfigMap", ref[0]) or {})["data"][ref[1]], encoding="utf-8")
                rule_files.append(str(local))
        config["rule_files"] = rule_files
        replaced = static_targets(config)
        print(f"{replaced} kubernetes_sd_configs blocks replaced by static targets "
              "(Debian's promtool has no Kubernetes discovery); the rest is checked as written")
        checked = Path(tmp) / "prometheus.yml"
        checked.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        result = subprocess.run(["promtool", "check", "config", str(checked)],
                                capture_output=True, text=True)
        sys.stdout.write(result.stdout.replace(tmp + "/", ""))
        sys.stderr.write(result.stderr.replace(tmp + "/", ""))
        fails.check(result.returncode == 0, "promtool check config failed")
    return fails.summary("prometheus")


# ---------------------------------------------------------------------------------------------
# checkov exceptions


def cmd_checkov(args: argparse.Namespace) -> int:
    raw = json.loads(Path(args.report).read_text(encoding="utf-8"))
    reports = raw if isinstance(raw, list) else [raw]
    allow = yaml.safe_load(Path(args.allow).read_text(encoding="utf-8")) or []
    used = [0] * len(allow)
    fails = Failures()
    passed = failed = excepted = 0
    for report in reports:
        results = report.get("results", {})
        passed += len(results.get("passed_checks", []))
        for f in results.get("failed_checks", []):
            failed += 1
            matched = False
            for i, rule in enumerate(allow):
                resources = rule.get("resources")
                if rule["check"] == f["check_id"] and (resources is None or f["resource"] in resources):
                    used[i] += 1
                    matched = True
            excepted += matched
            if not matched:
                fails.items.append(f"{f['check_id']} {f['check_name']}: {f['resource']}")
                print(f"  FAIL {f['check_id']} {f['check_name']}: {f['resource']} ({f.get('file_path')})")
    for rule, n in zip(allow, used):
        print(f"  excepted {rule['check']} on {n} objects ({', '.join(rule.get('resources') or ['any object'])})")
        # An exception nothing needs any more would hide the next real finding of that check.
        fails.check(n > 0, f"exception {rule['check']} {rule.get('resources', '(all)')} matched nothing: remove it")
    print(f"checkov: {passed} checks passed, {failed} failed, of which {excepted} excepted "
          f"by {Path(args.allow).name} and {failed - excepted} not")
    return fails.summary("checkov exceptions in use")


# ---------------------------------------------------------------------------------------------
# PromQL metric names


PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "atan2",
}
# Keywords followed by a list of label names, not an expression.
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}


@dataclass
class Token:
    kind: str  # ident, number, string, punct, var
    text: str


def tokenize(expr: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c.isspace():
            i += 1
        elif c == "#":  # a comment runs to the end of the line
            while i < n and expr[i] != "\n":
                i += 1
        elif c in "\"'`":
            j = i + 1
            while j < n and expr[j] != c:
                j += 2 if expr[j] == "\\" and c != "`" else 1
            tokens.append(Token("string", expr[i + 1:j]))
            i = j + 1
        elif c.isdigit() or (c == "." and i + 1 < n and expr[i + 1].isdigit()):
            j = i
            while j < n and (expr[j].isalnum() or expr[j] in "._"):
                # 1e+3 / 1e-3: the sign belongs to the number.
                j += 1
                if j < n and expr[j] in "+-" and expr[j - 1] in "eE" and expr[i:j - 1].replace(".", "").isdigit():
                    j += 1
            tokens.append(Token("number", expr[i:j]))
            i = j
        elif c == "$":  # a Grafana variable: $__rate_interval, ${var}, $var
            j = i + 1
            if j < n and expr[j] == "{":
                j = expr.find("}", j) + 1 or n
            else:
                while j < n and (expr[j].isalnum() or expr[j] == "_"):
                    j += 1
            tokens.append(Token("var", expr[i:j]))
            i = j
        elif c.isalpha() or c in "_:":
            j = i
            while j < n and (expr[j].isalnum() or expr[j] in "_:"):
                j += 1
            tokens.append(Token("ident", expr[i:j]))
            i = j
        else:
            two = expr[i:i + 2]
            if two in ("=~", "!~", "!=", "==", ">=", "<="):
                tokens.append(Token("punct", two))
                i += 2
            else:
                tokens.append(Token("punct", c))
                i += 1
    return tokens


@dataclass(frozen=True)
class MetricRef:
    name: str
    # The `job` matcher of the selector, if any: (operator, value).
    job: tuple[str, str] | None = None


def metric_refs(expr: str) -> list[MetricRef]:
    """Every metric a PromQL expression selects, with its `job` matcher."""
    toks = tokenize(expr)
    refs: list[MetricRef] = []
    i = 0

    def skip_group(start: int, open_: str, close: str) -> int:
        depth = 0
        j = start
        while j < len(toks):
            if toks[j].kind == "punct" and toks[j].text == open_:
                depth += 1
            elif toks[j].kind == "punct" and toks[j].text == close:
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
        return j

    def matchers(start: int) -> tuple[dict[str, tuple[str, str]], int]:
        """Parses `{label op "value", ...}` at toks[start] == '{'."""
        end = skip_group(start, "{", "}")
        found: dict[str, tuple[str, str]] = {}
        j = start + 1
        while j + 2 < end:
            if toks[j].kind == "ident" and toks[j + 1].kind == "punct" and toks[j + 2].kind == "string":
                found[toks[j].text] = (toks[j + 1].text, toks[j + 2].text)
                j += 3
            else:
                j += 1
        return found, end

    while i < len(toks):
        t = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if t.kind == "punct" and t.text == "[":
            i = skip_group(i, "[", "]")  # ranges, subqueries: durations only
            continue
        if t.kind == "punct" and t.text == "{":
            # A selector without a name before it: {__name__="x", ...}
            found, end = matchers(i)
            if "__name__" in found and found["__name__"][0] == "=":
                refs.append(MetricRef(found["__name__"][1], found.get("job")))
            i = end
            continue
        if t.kind != "ident":
            i += 1
            continue
        word = t.text.lower()
        if word in LABEL_LIST_KEYWORDS:
            i += 1
            if i < len(toks) and toks[i].text == "(":
                i = skip_group(i, "(", ")")
            continue
        if word in PROMQL_KEYWORDS:
            i += 1
            continue
        if nxt is not None and nxt.kind == "punct" and nxt.text == "(":
            i += 1  # a function or an aggregation
            continue
        if nxt is not None and nxt.kind == "ident" and nxt.text.lower() in ("by", "without"):
            i += 1  # an aggregation with its grouping first: sum by (le) (...)
            continue
        if nxt is not None and nxt.kind == "punct" and nxt.text == "{":
            found, end = matchers(i + 1)
            refs.append(MetricRef(t.text, found.get("job")))
            i = end
            continue
        refs.append(MetricRef(t.text))
        i += 1
    return refs


PARTS = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def family(name: str, families: dict[str, str]) -> str:
    """The metric family a sample name belongs to: a histogram's or a summary's parts
    (`_bucket`, `_sum`, `_count`) to their family, anything else to itself."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)]
        if name.endswith(suffix) and suffix in PARTS.get(families.get(base, ""), ()):
            return base
    return name


def parse_exposition(text: str) -> tuple[dict[str, str], set[str]]:
    """(family -> type from # TYPE lines, sample names) of a Prometheus text exposition."""
    families: dict[str, str] = {}
    samples: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                families[parts[2]] = parts[3]
        elif line and not line.startswith("#"):
            m = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
            if m:
                samples.add(m.group(0))
    return families, samples


# The edge's metrics come from an mtail program over nginx's edge log (compose and the local
# topology scrape it as this job); its declarations are its exports.
EDGE_JOB, EDGE_PROGRAM = "fractile-edge", ROOT / "deploy/mtail/edge.mtail"


def mtail_exports(program: Path) -> tuple[dict[str, str], set[str]]:
    """(family -> type, sample names) an mtail program exports: its metric declarations."""
    families: dict[str, str] = {}
    for m in re.finditer(r"^\s*(counter|gauge|histogram)\s+([a-zA-Z_:][a-zA-Z0-9_:]*)",
                         program.read_text(), re.M):
        families[m.group(2)] = m.group(1)
    return families, set(families)


@dataclass
class Exported:
    """What each job's binary exports."""

    by_job: dict[str, tuple[dict[str, str], set[str]]] = field(default_factory=dict)

    def has(self, job: str, name: str) -> bool:
        families, samples = self.by_job[job]
        return name in samples or name in families or family(name, families) in families


def jobs_for(ref: MetricRef, jobs: Iterable[str]) -> list[str]:
    jobs = list(jobs)
    if ref.job is None:
        return jobs
    op, value = ref.job
    if op == "=":
        return [j for j in jobs if j == value]
    if op == "!=":
        return [j for j in jobs if j != value]
    try:
        pattern = re.compile(f"^(?:{value})$")
    except re.error:
        return jobs
    if op == "=~":
        return [j for j in jobs if pattern.match(j)]
    return [j for j in jobs if not pattern.match(j)]


def expressions(docs: list[dict[str, Any]], rule_files: list[Path], dashboard: Path
                ) -> tuple[list[tuple[str, str]], list[str], set[str]]:
    """(source, PromQL) pairs, non-Prometheus autoscaler metrics, recording-rule names."""
    exprs: list[tuple[str, str]] = []
    resource_metrics: list[str] = []
    for d in docs:
        if d.get("kind") == "ScaledObject":
            for t in d.get("spec", {}).get("triggers", []) or []:
                if t.get("type") == "prometheus":
                    exprs.append((f"{ident(d)} trigger prometheus", t.get("metadata", {}).get("query", "")))
                elif t.get("type") in ("cpu", "memory"):
                    resource_metrics.append(f"{ident(d)} {t['type']} (metrics-server)")
        elif d.get("kind") == "HorizontalPodAutoscaler":
            for m in d.get("spec", {}).get("metrics", []) or []:
                kind = m.get("type", "")
                section = m.get(kind[:1].lower() + kind[1:], {}) if kind else {}
                if kind in ("Resource", "ContainerResource"):
                    resource_metrics.append(f"{ident(d)} {section.get('name')} (metrics-server)")
                else:
                    # Pods / Object / External metrics name a series an adapter serves.
                    metric = (section.get("metric") or {}).get("name", "")
                    exprs.append((f"{ident(d)} {kind} metric", metric))
    recorded: set[str] = set()
    for alerts in rule_files:
        rules = yaml.safe_load(alerts.read_text(encoding="utf-8")) or {}
        for g in rules.get("groups", []) or []:
            for r in g.get("rules", []) or []:
                label = r.get("alert") or r.get("record") or "?"
                if r.get("record"):
                    recorded.add(r["record"])
                    if CONSTANT_EXPR.fullmatch(str(r.get("expr", ""))):
                        continue
                exprs.append((f"{alerts.name} {label}", str(r.get("expr", ""))))
    board = json.loads(dashboard.read_text(encoding="utf-8"))

    def walk(node: Any, title: str) -> None:
        if isinstance(node, dict):
            title = node.get("title", title) if isinstance(node.get("title"), str) else title
            for k, v in node.items():
                if k == "expr" and isinstance(v, str):
                    exprs.append((f"{dashboard.name} panel {title!r}", v))
                else:
                    walk(v, title)
        elif isinstance(node, list):
            for x in node:
                walk(x, title)

    walk(board, "?")
    return exprs, resource_metrics, recorded


def check_metric_names(exprs: list[tuple[str, str]], exported: Exported, recorded: set[str],
                       fails: Failures, quiet: bool = False) -> tuple[int, set[str], set[str]]:
    """Checks every referenced name; returns (references, names found, foreign names)."""
    count = 0
    names: set[str] = set()
    foreign: set[str] = set()
    for source, expr in exprs:
        refs = metric_refs(expr)
        fails.check(bool(refs), f"{source}: no metric name found in {expr!r}")
        for ref in refs:
            count += 1
            names.add(ref.name)
            if ref.name in FOREIGN_METRICS or any(ref.name.startswith(p) for p in FOREIGN_PREFIXES):
                foreign.add(ref.name)
                continue
            if ref.name in recorded:
                continue
            if ref.job is None:
                # No job named: some binary must export it.
                fails.check(any(exported.has(j, ref.name) for j in exported.by_job),
                            f"{source}: {ref.name} is exported by no fractile binary")
                continue
            jobs = jobs_for(ref, exported.by_job)
            if not jobs:
                fails.check(False, f"{source}: {ref.name} selects job {ref.job}, which no binary runs as")
                continue
            # A job named (or matched by a regex): each of those jobs must export it.
            for job in jobs:
                fails.check(exported.has(job, ref.name), f"{source}: {ref.name} is not exported by {job}")
    return count, names, foreign


# ---------------------------------------------------------------------------------------------
# drift: the manifests against the running binaries


def help_of(binary: Path) -> tuple[set[str], dict[str, str]]:
    """(environment names the binary accepts, their FRACTILE_* defaults) from `--help`:
    every `[env: NAME]`, so OTEL_* names count too once --help lists them."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    text = subprocess.run([str(binary), "--help"], check=True, capture_output=True, text=True,
                          env=env).stdout
    names = set(re.findall(r"\[env: ([A-Z][A-Z0-9_]*)", text))
    defaults: dict[str, str] = {}
    # clap: "... [env: NAME=] [default: VALUE]" (the "=" shows a value set in the environment).
    for m in re.finditer(r"\[env: (FRACTILE_[A-Z0-9_]+)=?[^\]]*\]\s*\[default: ([^\]]*)\]", text):
        defaults[m.group(1)] = m.group(2)
    return names, defaults


def duration_seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", value.strip())
    if not m:
        raise ValueError(f"{value!r} is not a duration like 20s")
    mult = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return int(m.group(1)) * mult


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def container_env(c: dict[str, Any], docs: list[dict[str, Any]], fails: Failures,
                  where: str) -> tuple[dict[str, str | None], list[str]]:
    """name -> literal value (None when from a Secret or a field), and the sources read."""
    env: dict[str, str | None] = {}
    sources: list[str] = []
    for ref in c.get("envFrom", []) or []:
        if "configMapRef" in ref:
            cm_name = ref["configMapRef"].get("name", "")
            cm = find(docs, "ConfigMap", cm_name)
            if fails.check(cm is not None, f"{where}: envFrom ConfigMap {cm_name} is not rendered"):
                assert cm is not None
                sources.append(f"ConfigMap {cm_name}")
                for k, v in (cm.get("data") or {}).items():
                    env[ref.get("prefix", "") + k] = v
        elif "secretRef" in ref:
            sec_name = ref["secretRef"].get("name", "")
            sec = find(docs, "Secret", sec_name) or {}
            sources.append(f"Secret {sec_name}")
            for k in list((sec.get("data") or {})) + list((sec.get("stringData") or {})):
                env[ref.get("prefix", "") + k] = None
    for e in c.get("env", []) or []:
        env[e["name"]] = e.get("value") if "value" in e else None
    return env, sources


def delete_queues(prefix: str) -> None:
    """Deletes the render queues under `prefix`, best effort: with `rabbitmqctl` on this
    machine's broker (CI's broker is thrown away with the job)."""
    if shutil.which("rabbitmqctl") is None:
        return
    for queue in ("render.interactive.v2", "render.bulk", "render.dead.v2", "render.dead"):
        subprocess.run(["rabbitmqctl", "delete_queue", prefix + queue],
                       capture_output=True, timeout=30, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)
    except (urllib.error.URLError, OSError):
        return 0, b"", {}


@dataclass
class Workload:
    deployment: str
    container: dict[str, Any]
    spec: dict[str, Any]
    binary: str
    env: dict[str, str | None]
    accepted: set[str]
    defaults: dict[str, str]

    def setting(self, name: str) -> str | None:
        value = self.env.get(name)
        return value if value is not None else self.defaults.get(name)


RUNTIME_STAGE = "runtime"  # the image deploy/kind/up.sh builds (--target runtime)


def runtime_stage() -> str:
    """The text of deploy/Dockerfile's runtime stage (from its FROM to the next FROM)."""
    text = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    stages = re.split(r"^(?=FROM\s)", text, flags=re.M | re.I)
    for stage in stages:
        if re.match(rf"FROM\s+\S+\s+AS\s+{RUNTIME_STAGE}\s*$", stage.splitlines()[0] if stage else "", re.I):
            return stage
    return ""


def image_entrypoint(stage: str) -> str:
    """The binary the image runs when a container sets no `command`."""
    entries = re.findall(r"^ENTRYPOINT\s+(\[.*\])\s*$", stage, re.M)
    return str(json.loads(entries[-1])[0]) if entries else ""


def check_workload(w: Workload, fails: Failures) -> None:
    where = f"Deployment/{w.deployment} container {w.container.get('name')}"
    for name in sorted(n for n in w.env if n.startswith(("FRACTILE_", "OTEL_"))):
        fails.check(name in w.accepted, f"{where}: {name} is not accepted by {w.binary} (see --help)")

    ports = {p.get("name"): p.get("containerPort") for p in w.container.get("ports", []) or []}
    admin = w.setting("FRACTILE_ADMIN_LISTEN")
    if fails.check(admin is not None, f"{where}: no FRACTILE_ADMIN_LISTEN and no default"):
        assert admin is not None
        fails.check(ports.get("admin") == port_of(admin),
                    f"{where}: container port `admin` {ports.get('admin')} != FRACTILE_ADMIN_LISTEN {admin}")
    if "FRACTILE_LISTEN" in w.accepted:
        listen = w.setting("FRACTILE_LISTEN") or ""
        fails.check(ports.get("http") == port_of(listen),
                    f"{where}: container port `http` {ports.get('http')} != FRACTILE_LISTEN {listen}")

    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = w.container.get(probe)
        if probe != "startupProbe" and not fails.check(p is not None, f"{where}: no {probe}"):
            continue
        if p is None:
            continue
        get = p.get("httpGet")
        if not fails.check(get is not None, f"{where}: {probe} is not an HTTP GET of the admin port"):
            continue
        port = get.get("port")
        number = ports.get(port) if isinstance(port, str) else port
        fails.check(port == "admin" or number == ports.get("admin"),
                    f"{where}: {probe} port {port} is not the container port named `admin`")
        if admin is not None:
            fails.check(number == port_of(admin),
                        f"{where}: {probe} port {port} ({number}) != FRACTILE_ADMIN_LISTEN {admin}")

    def give_up(p: dict[str, Any] | None) -> float:
        p = p or {}
        return float(p.get("periodSeconds", 10)) * float(p.get("failureThreshold", 3))

    ready, live = give_up(w.container.get("readinessProbe")), give_up(w.container.get("livenessProbe"))
    fails.check(live > ready,
                f"{where}: liveness gives up after {live:g} s, not later than readiness ({ready:g} s): "
                "an overloaded pod would be restarted before it is taken out of rotation")

    grace = float(w.spec.get("terminationGracePeriodSeconds", 30))
    pre_stop = ((w.container.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
    shutdown = w.setting("FRACTILE_SHUTDOWN_TIMEOUT")
    if fails.check(shutdown is not None, f"{where}: no FRACTILE_SHUTDOWN_TIMEOUT and no default"):
        assert shutdown is not None
        # The api serves on for FRACTILE_SHUTDOWN_DELAY after SIGTERM before it drains; a
        # binary without that setting (the worker) drains at once.
        delay = w.setting("FRACTILE_SHUTDOWN_DELAY") or "0s"
        needed = float(pre_stop) + duration_seconds(delay) + duration_seconds(shutdown) + 5
        fails.check(grace >= needed,
                    f"{where}: terminationGracePeriodSeconds {grace:g} < preStop {pre_stop} s + "
                    f"FRACTILE_SHUTDOWN_DELAY {delay} + FRACTILE_SHUTDOWN_TIMEOUT {shutdown} + 5 s = {needed:g} s")
        if not fails.quiet:
            print(f"  {where}: grace {grace:g} s {'>=' if grace >= needed else '<'} preStop {pre_stop} s"
                  f" + delay {delay} + shutdown {shutdown} + 5 s; liveness gives up after {live:g} s,"
                  f" readiness after {ready:g} s")


def check_services(docs: list[dict[str, Any]], fails: Failures) -> None:
    """Every Service's named targetPort is a container port of the pods it selects."""
    for svc in (d for d in docs if d.get("kind") == "Service"):
        selector = svc.get("spec", {}).get("selector") or {}
        pods = [d for d in docs if pod_spec(d) is not None and selector and all(
            ((d.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}).get(k) == v)
            for k, v in selector.items())]
        if not fails.check(bool(pods), f"{ident(svc)} selects no rendered workload"):
            continue
        for port in svc.get("spec", {}).get("ports", []) or []:
            target = port.get("targetPort", port.get("port"))
            for pod in pods:
                cports = [p for c in (pod_spec(pod) or {}).get("containers", []) for p in c.get("ports", []) or []]
                ok = any(p.get("name") == target or p.get("containerPort") == target for p in cports)
                fails.check(ok, f"{ident(svc)} port {port.get('name')}: targetPort {target} is no container port of {ident(pod)}")


class Processes:
    """The binaries this check starts; all stopped on exit, whatever happens."""

    def __init__(self, log_dir: Path) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.log_dir = log_dir

    def start(self, name: str, binary: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("wb")
        p = subprocess.Popen([str(binary)], env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((name, p))
        return p

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(encoding="utf-8", errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        for _, p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for _, p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if http_get(url, timeout=1)[0] == 200:
            return True
        time.sleep(0.2)
    return False


def target_dir() -> Path:
    out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps",
                          "--manifest-path", str(ROOT / "Cargo.toml")],
                         check=True, capture_output=True, text=True).stdout
    return Path(json.loads(out)["target_directory"])


def collect_workloads(docs: list[dict[str, Any]], bin_dir: Path, fails: Failures) -> list[Workload]:
    """The api and worker containers, each with the binary it runs and that binary's --help."""
    stage = runtime_stage()
    fails.check(bool(stage), f"deploy/Dockerfile has no stage `{RUNTIME_STAGE}`")
    entrypoint = image_entrypoint(stage)
    workloads: list[Workload] = []
    for deployment in ("api", "worker"):
        obj = find(docs, "Deployment", deployment)
        if not fails.check(obj is not None, f"no Deployment {deployment}"):
            continue
        assert obj is not None
        spec = pod_spec(obj) or {}
        for c in spec.get("containers", []):
            path = (c.get("command") or [entrypoint])[0]
            fails.check(bool(re.search(rf"^COPY .* {re.escape(path)}\s*$", stage, re.M)),
                        f"Deployment/{deployment} runs {path}, which deploy/Dockerfile's "
                        f"{RUNTIME_STAGE} stage does not install")
            binary = Path(path).name
            if not fails.check((bin_dir / binary).exists(),
                               f"{bin_dir / binary} not built (cargo build -p fractile-api -p fractile-worker)"):
                continue
            accepted, defaults = help_of(bin_dir / binary)
            env, sources = container_env(c, docs, fails, f"Deployment/{deployment}")
            if not fails.quiet:
                print(f"  Deployment/{deployment} container {c.get('name')}: {binary}, "
                      f"{sum(n.startswith('FRACTILE_') for n in env)} FRACTILE_* settings "
                      f"(env + {', '.join(sources) or 'no envFrom'}); the binary accepts {len(accepted)}")
            workloads.append(Workload(deployment, c, spec, binary, env, accepted, defaults))
    return workloads


# What k8s/tests/drifted must be rejected for: one drift of each kind the checks look for.
DRIFTED_EXPECTED = {
    "an env name the binary does not accept": "FRACTILE_ADMIN_PORT is not accepted by fractile-api",
    "an env name neither FRACTILE_* nor known": "env OTEL_EXPORTER_OTLP_ENDPIONT is not a FRACTILE_* setting",
    "admin port != FRACTILE_ADMIN_LISTEN": "container port `admin` 9000 != FRACTILE_ADMIN_LISTEN 0.0.0.0:9100",
    "probe port != FRACTILE_ADMIN_LISTEN": "readinessProbe port admin (9000) != FRACTILE_ADMIN_LISTEN 0.0.0.0:9100",
    "traffic port != FRACTILE_LISTEN": "container port `http` 8080 != FRACTILE_LISTEN 0.0.0.0:8081",
    "grace period too short": ("terminationGracePeriodSeconds 20 < preStop 5 s + FRACTILE_SHUTDOWN_DELAY 0s + "
                               "FRACTILE_SHUTDOWN_TIMEOUT 20s + 5 s"),
    "liveness gives up first": "Deployment/worker container worker: liveness gives up after 4 s, not later than readiness",
    "replicas under an autoscaler": "Deployment/worker sets `replicas:`",
    "no memory limit": "Deployment/worker container worker: no limits.memory",
}


def check_drifted(fixture: Path, bin_dir: Path, fails: Failures) -> None:
    """The drift checks must reject k8s/tests/drifted for each of its deliberate drifts."""
    docs = render(fixture)
    probe = Failures(quiet=True)
    check_structure(docs, probe)
    for w in collect_workloads(docs, bin_dir, probe):
        check_workload(w, probe)
    print(f"drifted fixture {fixture} (must be rejected for each drift): {len(probe.items)} failures")
    for what, needle in DRIFTED_EXPECTED.items():
        caught = any(needle in item for item in probe.items)
        print(f"  {'rejected' if caught else 'MISSED  '}: {what}")
        fails.check(caught, f"{fixture}: the drift check missed {what} ({needle!r})")


def cmd_drift(args: argparse.Namespace) -> int:
    overlay = Path(args.overlay)
    docs = render(overlay)
    bin_dir = Path(args.target_dir) / "debug" if args.target_dir else target_dir() / "debug"
    fails = Failures()
    print(f"rendered {overlay}: {len(docs)} objects; binaries from {bin_dir}")

    print("structure (duplicates, autoscalers, replicas, resources)")
    check_structure(docs, fails)
    check_services(docs, fails)

    workloads = collect_workloads(docs, bin_dir, fails)
    for w in workloads:
        check_workload(w, fails)
    for w in workloads:
        missing = sorted(n for n in KNOWN_ENV if n not in w.accepted)
        fails.check(not missing, f"{w.binary} --help does not list {', '.join(missing)} "
                                 f"(KNOWN_ENV in check_manifests.py names settings it does not have)")
    if len(workloads) != 2:
        return fails.summary("drift")

    # The binaries, started as the manifests configure them (URLs and listen addresses aside).
    run_id = f"{os.getpid()}-{int(time.time())}"
    redis_url = os.environ.get("FRACTILE_CHECK_REDIS_URL", "redis://127.0.0.1:6379")
    amqp_url = os.environ.get("FRACTILE_CHECK_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
    queue_prefix = f"fractile-k8s-check-{run_id}."
    with tempfile.TemporaryDirectory(prefix="fractile-k8s-check-") as tmp:
        procs = Processes(Path(tmp))
        try:
            admin: dict[str, str] = {}
            started: dict[str, subprocess.Popen[bytes]] = {}
            traffic = ""
            for w in workloads:
                env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
                for k, v in w.env.items():
                    if k.startswith("FRACTILE_"):
                        # From a Secret or the pod's own fields: a stand-in named after the
                        # variable, so every workload gets the same one (the api and the
                        # workers share the tiles' MAC key), and long enough for a secret with
                        # a minimum length (a MAC key: 32 bytes).
                        env[k] = v if v is not None else f"k8s-check-stand-in-{k}"
                admin_addr = f"127.0.0.1:{free_port()}"
                env["FRACTILE_ADMIN_LISTEN"] = admin_addr
                if "FRACTILE_LISTEN" in w.accepted:
                    traffic = f"127.0.0.1:{free_port()}"
                    env["FRACTILE_LISTEN"] = traffic
                env["FRACTILE_REDIS_URL"] = redis_url
                if "FRACTILE_STATE_REDIS_URL" in w.accepted:
                    env["FRACTILE_STATE_REDIS_URL"] = redis_url
                env["FRACTILE_AMQP_URL"] = amqp_url
                # Not set by the manifests: kept apart from anyone else's fractile on the same
                # Redis and RabbitMQ (their keys, their queues and workers), and short-lived.
                env["FRACTILE_KEY_PREFIX"] = f"fractile-k8s-check-{run_id}:"
                # A prefix per run: queues declared by another version (a bulk queue without
                # its bound) would be refused a redeclaration. Deleted at the end.
                env["FRACTILE_QUEUE_PREFIX"] = queue_prefix
                env["FRACTILE_TILE_TTL"] = "5m"
                unknown = sorted(k for k in env if k.startswith("FRACTILE_") and k not in w.accepted)
                for k in unknown:
                    del env[k]  # already reported; the binary would ignore it anyway
                admin[w.binary] = admin_addr
                started[w.binary] = procs.start(w.binary, bin_dir / w.binary, env)
            # The worker first: its /readyz means its queues are declared, so the api's miss
            # below finds a consumer.
            for w in sorted(workloads, key=lambda w: w.binary != "fractile-worker"):
                probes = {w.container[p]["httpGet"]["path"] for p in
                          ("startupProbe", "readinessProbe", "livenessProbe")
                          if p in w.container and "httpGet" in w.container[p]}
                base = f"http://{admin[w.binary]}"
                ready_path = w.container.get("readinessProbe", {}).get("httpGet", {}).get("path", "/readyz")
                ok = wait_ready(base + ready_path, started[w.binary], args.timeout)
                if not fails.check(ok, f"{w.binary} did not answer 200 on {ready_path} within {args.timeout:g} s"):
                    print(procs.log(w.binary))
                    continue
                for path in sorted(probes | {"/metrics"}):
                    status, body, _ = http_get(base + path)
                    fails.check(status == 200, f"{w.binary}: GET {path} on the admin port answered {status}")
                    print(f"  {w.binary}: GET {admin[w.binary].split(':')[0]}:<admin>{path} -> {status}"
                          f"{' (' + str(len(body)) + ' bytes)' if path == '/metrics' else ''}")

            # Traffic, so the labelled families exist: a miss (rendered by the worker through
            # the queue), the same tile again (an L1 hit), and a tile that does not exist.
            z = 2
            x, y = random.randrange(4), random.randrange(4)
            sources = []
            for attempt in range(2):
                status, body, headers = http_get(f"http://{traffic}/tiles/{z}/{x}/{y}.png", timeout=30)
                sources.append(headers.get("cache-status", headers.get("Cache-Status", "?")))
                fails.check(status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n",
                            f"tile /tiles/{z}/{x}/{y}.png request {attempt + 1} answered {status}")
            status, _, _ = http_get(f"http://{traffic}/tiles/{z}/9/9.png")
            print(f"  traffic: /tiles/{z}/{x}/{y}.png twice (cache-status {' then '.join(sources)}), "
                  f"an out-of-range tile ({status})")

            exported = Exported()
            for w in workloads:
                status, body, _ = http_get(f"http://{admin[w.binary]}/metrics")
                exported.by_job[BINARY_JOBS[w.binary]] = parse_exposition(body.decode("utf-8", "replace"))
            exported.by_job[EDGE_JOB] = mtail_exports(EDGE_PROGRAM)
            worker_samples = http_get(f"http://{admin['fractile-worker']}/metrics")[1].decode()
            consumed = sum(float(line.rsplit(" ", 1)[1]) for line in worker_samples.splitlines()
                           if line.startswith("worker_jobs_consumed_total"))
            if fails.check(consumed >= 1, "the miss was not rendered by the worker (worker_jobs_consumed_total is 0)"):
                print(f"  the miss went through the queue: worker_jobs_consumed_total {consumed:g}")
            for job, (families, samples) in sorted(exported.by_job.items()):
                print(f"  {job} /metrics: {len(families)} families, {len(samples)} sample names")
        finally:
            procs.stop()
            delete_queues(queue_prefix)

    print("metric names (autoscalers, alert rules, dashboard)")
    exprs, resource_metrics, recorded = expressions(
        docs, [Path(a) for a in args.alerts], Path(args.dashboard))
    count, names, foreign = check_metric_names(exprs, exported, recorded, fails)
    print(f"  {len(exprs)} expressions, {count} references to {len(names)} metric names")
    for name in sorted(foreign):
        origin = FOREIGN_METRICS.get(name) or next(v for p, v in FOREIGN_PREFIXES.items() if name.startswith(p))
        print(f"  not from a fractile binary: {name} ({origin})")
    for r in resource_metrics:
        print(f"  resource metric, not a Prometheus name: {r}")

    if args.negative_fixture:
        # Each rule of the fixture must be rejected on its own.
        fixture = Path(args.negative_fixture)
        fixture_exprs, _, fixture_recorded = expressions([], [fixture], Path(args.dashboard))
        fixture_exprs = [e for e in fixture_exprs if e[0].startswith(fixture.name)]
        print(f"metric-name fixture {fixture} (each rule must be rejected):")
        for source, expr in fixture_exprs:
            probe = Failures(quiet=True)
            check_metric_names([(source, expr)], exported, fixture_recorded, probe)
            print(f"  {'rejected' if probe.items else 'ACCEPTED'}: {'; '.join(probe.items) or source}")
            fails.check(bool(probe.items), f"{source} names only exported metrics: the check missed it")
    if args.drifted_fixture:
        check_drifted(Path(args.drifted_fixture), bin_dir, fails)
    return fails.summary("drift and metric names")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("static")
    p.add_argument("rendered", nargs="+")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_static)
    p = sub.add_parser("split")
    p.add_argument("rendered")
    p.add_argument("core_out")
    p.add_argument("crd_out")
    p.set_defaults(func=cmd_split)
    p = sub.add_parser("prometheus")
    p.add_argument("rendered")
    p.set_defaults(func=cmd_prometheus)
    p = sub.add_parser("checkov")
    p.add_argument("report")
    p.add_argument("allow")
    p.set_defaults(func=cmd_checkov)
    p = sub.add_parser("drift")
    p.add_argument("--overlay", default=str(ROOT / "k8s" / "overlays" / "kind"))
    p.add_argument("--target-dir", help="cargo's target directory (default: cargo metadata)")
    p.add_argument("--alerts", nargs="+", default=[
        str(ROOT / "deploy" / "prometheus" / "alerts.yml"),
        str(ROOT / "deploy" / "prometheus" / "slo-rules.yml"),
    ], help="rule files (alerting and recording rules)")
    p.add_argument("--dashboard", default=str(ROOT / "deploy" / "grafana" / "dashboards" / "fractile.json"))
    p.add_argument("--negative-fixture", help="a rule file naming metrics no binary exports")
    p.add_argument("--drifted-fixture", help="a kustomization with one drift of each kind")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for /readyz")
    p.set_defaults(func=cmd_drift)
    args = parser.parse_args()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
