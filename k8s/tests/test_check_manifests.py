#!/usr/bin/env python3
"""Unit tests of k8s/check_manifests.py's PromQL name extraction and metric matching, and of
its environment-name check.

Run: python3 k8s/tests/test_check_manifests.py (standard library unittest + PyYAML).
"""

from __future__ import annotations

import sys
import tempfile
import unittest
from pathlib import Path

# No __pycache__ left in k8s/ (nothing ignores it there).
sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from check_manifests import (  # noqa: E402  (the path above first)
    Exported,
    Failures,
    MetricRef,
    check_env_names,
    check_metric_names,
    duration_seconds,
    expressions,
    jobs_for,
    metric_refs,
    parse_exposition,
)


def names(expr: str) -> list[str]:
    return [r.name for r in metric_refs(expr)]


class MetricRefs(unittest.TestCase):
    def test_selector_with_job(self) -> None:
        self.assertEqual(
            metric_refs('sum(rate(http_requests_total{job="fractile-api", status="5xx"}[5m]))'),
            [MetricRef("http_requests_total", ("=", "fractile-api"))],
        )

    def test_bare_name_and_functions(self) -> None:
        self.assertEqual(names("rate(process_cpu_seconds_total[1m]) > 0.9"), ["process_cpu_seconds_total"])
        self.assertEqual(names("up"), ["up"])
        self.assertEqual(names("sum(up{job='x'}) or vector(0)"), ["up"])

    def test_by_and_without_lists_are_labels(self) -> None:
        expr = ("histogram_quantile(0.99, sum by (le, cache) (rate(http_request_duration_seconds_bucket"
                '{job="fractile-api", route="/tiles/{z}/{x}/{y}"}[$__rate_interval])))')
        self.assertEqual(names(expr), ["http_request_duration_seconds_bucket"])
        self.assertEqual(names("sum(rate(renders_total[5m])) without (instance, pod)"), ["renders_total"])
        self.assertEqual(names("a / on(instance) group_left(node) b"), ["a", "b"])
        self.assertEqual(names("a / ignoring(queue) b"), ["a", "b"])

    def test_keywords_numbers_and_durations_are_not_names(self) -> None:
        expr = "max by (queue) (x > 100) and deriv(y[10m] offset 5m) > 0 unless z == bool 1e3"
        self.assertEqual(names(expr), ["x", "y", "z"])
        self.assertEqual(names("rate(a[5m:30s]) @ end()"), ["a"])
        self.assertEqual(names("-Inf < w"), ["w"])

    def test_strings_with_braces_and_label_values(self) -> None:
        # A label value that looks like PromQL (or holds braces) is not a name.
        expr = 'count(cache_requests_total{layer="l1", result=~"hit|miss", route="{a}[b]"})'
        self.assertEqual(names(expr), ["cache_requests_total"])
        self.assertEqual(names('label_replace(m, "dst", "$1", "src", "(.*)")'), ["m"])

    def test_name_matcher_without_a_name(self) -> None:
        self.assertEqual(metric_refs('{__name__="broker_queue_ready_messages", job="fractile-worker"}'),
                         [MetricRef("broker_queue_ready_messages", ("=", "fractile-worker"))])

    def test_grafana_variables(self) -> None:
        self.assertEqual(names('rate(x{instance=~"$instance"}[$__rate_interval]) * ${factor}'), ["x"])

    def test_comments(self) -> None:
        self.assertEqual(names("a # b{c}\n + d"), ["a", "d"])

    def test_colons_in_recorded_names(self) -> None:
        self.assertEqual(names("job:renders:rate5m > 1"), ["job:renders:rate5m"])


class Matching(unittest.TestCase):
    API = """# HELP http_request_duration_seconds x
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.1"} 1
http_request_duration_seconds_sum 0.05
http_request_duration_seconds_count 1
# TYPE http_requests_total counter
http_requests_total{status="2xx"} 3
"""
    WORKER = "# TYPE renders_total counter\nrenders_total 2\n"

    def exported(self) -> Exported:
        return Exported({"fractile-api": parse_exposition(self.API),
                         "fractile-worker": parse_exposition(self.WORKER)})

    def test_histogram_parts_belong_to_their_family(self) -> None:
        e = self.exported()
        for name in ("http_request_duration_seconds_bucket", "http_request_duration_seconds_count",
                     "http_request_duration_seconds"):
            self.assertTrue(e.has("fractile-api", name), name)
        self.assertFalse(e.has("fractile-api", "http_requests_total_bucket"))
        self.assertFalse(e.has("fractile-api", "renders_total"))

    def test_jobs_for_matchers(self) -> None:
        jobs = ["fractile-api", "fractile-worker"]
        self.assertEqual(jobs_for(MetricRef("x"), jobs), jobs)
        self.assertEqual(jobs_for(MetricRef("x", ("=~", "fractile-api|fractile-worker")), jobs), jobs)
        self.assertEqual(jobs_for(MetricRef("x", ("!=", "fractile-api")), jobs), ["fractile-worker"])
        self.assertEqual(jobs_for(MetricRef("x", ("=", "other")), jobs), [])

    def test_check_fails_on_unknown_and_on_the_wrong_job(self) -> None:
        exprs = [
            ("ok", 'rate(renders_total{job="fractile-worker"}[1m])'),
            ("unknown", 'rate(no_such_metric_total{job="fractile-api"}[1m])'),
            ("wrong job", 'rate(renders_total{job="fractile-api"}[1m])'),
            ("foreign", 'up{job="fractile-api"} + rabbitmq_queue_messages_ready'),
            ("no job", "renders_total"),
        ]
        fails = Failures()
        _, found, foreign = check_metric_names(exprs, self.exported(), set(), fails)
        self.assertEqual(len(fails.items), 2, fails.items)
        self.assertIn("no_such_metric_total is not exported by fractile-api", fails.items[0])
        self.assertIn("renders_total is not exported by fractile-api", fails.items[1])
        self.assertEqual(foreign, {"up", "rabbitmq_queue_messages_ready"})
        self.assertIn("renders_total", found)

    def test_an_expression_without_a_name_fails(self) -> None:
        fails = Failures()
        check_metric_names([("empty", "vector(1)")], self.exported(), set(), fails)
        self.assertEqual(len(fails.items), 1)

    def test_a_constant_recording_rule_is_recorded_not_checked(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            rules = Path(tmp) / "rules.yml"
            rules.write_text(
                "groups:\n  - name: g\n    rules:\n"
                "      - record: slo:objective:ratio\n        expr: vector(0.999)\n"
                "      - alert: Always\n        expr: vector(1)\n"
            )
            board = Path(tmp) / "board.json"
            board.write_text("{}")
            exprs, _, recorded = expressions([], [rules], board)
        self.assertEqual(recorded, {"slo:objective:ratio"})
        self.assertEqual(exprs, [("rules.yml Always", "vector(1)")])

    def test_durations(self) -> None:
        self.assertEqual(duration_seconds("20s"), 20)
        self.assertEqual(duration_seconds("1m"), 60)
        self.assertEqual(duration_seconds("500ms"), 0.5)
        with self.assertRaises(ValueError):
            duration_seconds("20")


def deployment(name: str, env: list[dict], image: str = "fractile:0.1.0") -> dict:
    labels = {"app.kubernetes.io/name": "fractile", "app.kubernetes.io/component": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": name, "image": image, "env": env}]}}}}


def egress_policy(name: str, ports: list[int]) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name},
            "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/component": name}},
                     "policyTypes": ["Egress"],
                     "egress": [{"ports": [{"protocol": "TCP", "port": p}]} for p in ports]}}


class EnvNames(unittest.TestCase):
    ENV = [
        {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "FRACTILE_REDIS_URL", "value": "redis://fractile:$(REDIS_PASSWORD)@redis:6379"},
        {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector.observability:4318"},
        {"name": "OTEL_TRACES_SAMPLER", "value": "parentbased_traceidratio"},
    ]

    def failures(self, docs: list[dict]) -> list[str]:
        fails = Failures(quiet=True)
        check_env_names(docs, fails)
        return fails.items

    def test_settings_helpers_and_known_names_pass(self) -> None:
        self.assertEqual(self.failures([deployment("api", self.ENV)]), [])

    def test_an_unknown_name_fails_on_fractile_images_only(self) -> None:
        env = self.ENV + [{"name": "OTEL_EXPORTER_OTLP_ENDPIONT", "value": "x"}]
        items = self.failures([deployment("api", env), deployment("redis", env, image="redis:7.4-alpine")])
        self.assertEqual(len(items), 1, items)
        self.assertIn("Deployment/api container api: env OTEL_EXPORTER_OTLP_ENDPIONT", items[0])

    def test_egress_to_the_collector_port(self) -> None:
        self.assertEqual(self.failures([deployment("api", self.ENV), egress_policy("api", [6379, 4318])]), [])
        items = self.failures([deployment("api", self.ENV), egress_policy("api", [6379])])
        self.assertEqual(len(items), 1, items)
        self.assertIn("NetworkPolicy/api allows no egress to port 4318", items[0])
        # A policy of another component does not restrict this one.
        self.assertEqual(self.failures([deployment("api", self.ENV), egress_policy("worker", [6379])]), [])


if __name__ == "__main__":
    unittest.main()
