#!/usr/bin/env python3
"""Checks the Grafana dashboards of deploy/grafana (Python 3.11 standard library only).

Static checks (always):
  * the dashboard JSON parses;
  * every panel with queries, rows' nested panels included, uses the datasource uid
    `prometheus` (and so does every target that names a datasource of its own);
  * no string anywhere contains `${DS_` (an import placeholder provisioning cannot fill);
  * every target has a non-empty `expr`;
  * panel ids are unique and panels do not overlap on the grid;
  * the datasource provisioning file pins a prometheus datasource with uid `prometheus`;
  * every link to Explore (a panel's or the dashboard's) decodes, and each datasource it
    names is provisioned by a file beside that one (jaeger.yml: uid `jaeger`).

Live checks (with --prometheus URL): every query is also evaluated as an instant query
through URL/api/v1/query, after replacing Grafana's variables ($__rate_interval -> 1m,
$__interval -> 30s, ...). A query Prometheus rejects fails the check; an empty result is fine.

Usage:
  python3 deploy/grafana/check_dashboard.py deploy/grafana/dashboards/fractile.json
  python3 deploy/grafana/check_dashboard.py --prometheus http://127.0.0.1:9090 [DASHBOARD...]

Without DASHBOARD arguments every *.json in the dashboards/ directory next to this script is
checked. Exit status: 0 all good, 1 a check failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATASOURCES = HERE / "provisioning" / "datasources" / "prometheus.yml"
DEFAULT_DASHBOARDS = HERE / "dashboards"
DS_UID = "prometheus"
GRID_WIDTH = 24

# Values for Grafana's built-in variables in live mode: a 1m rate window, a 30s step, and the
# dashboard's default 15m range. `$__rate_interval` is at least 4 scrape intervals in Grafana;
# 1m covers that for any scrape interval up to 15s (the stack scrapes every 5s).
BUILTIN_VARIABLES = {
    "__rate_interval": "1m",
    "__rate_interval_ms": "60000",
    "__interval": "30s",
    "__interval_ms": "30000",
    "__range": "15m",
    "__range_s": "900",
    "__range_ms": "900000",
}
# $name, ${name} and ${name:format}. Built-ins start with "__".
VARIABLE_RE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


class Failures:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.messages.append(f"{where}: {message}")


def iter_panels(panels: list, parent: str = ""):
    """Yields (panel, label, nested) for every panel, descending into rows' `panels`."""
    for panel in panels or []:
        if not isinstance(panel, dict):
            continue
        label = f'{parent}panel {panel.get("id", "?")} "{panel.get("title", "")}"'
        yield panel, label, bool(parent)
        if panel.get("panels"):
            yield from iter_panels(panel["panels"], parent=f"{label} > ")


def walk_strings(value, path: str = "$"):
    """Yields (path, string) for every string in a JSON document, keys included."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield f"{path}.{key} (key)", key
            yield from walk_strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk_strings(item, f"{path}[{index}]")


def datasource_uid(datasource) -> str | None:
    # Grafana accepts a bare string (a datasource name or uid) in old dashboards.
    if isinstance(datasource, dict):
        return datasource.get("uid")
    if isinstance(datasource, str):
        return datasource
    return None


def check_layout(panels: list, where: str, failures: Failures) -> None:
    """Grid positions within one list of panels: inside the 24-column grid, no overlaps."""
    boxes = []
    for panel in panels:
        grid = panel.get("gridPos") or {}
        label = f'panel {panel.get("id", "?")} "{panel.get("title", "")}"'
        try:
            x, y, w, h = (int(grid[k]) for k in ("x", "y", "w", "h"))
        except (KeyError, TypeError, ValueError):
            failures.add(where, f"{label} has no complete gridPos")
            continue
        if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > GRID_WIDTH:
            failures.add(where, f"{label} gridPos {grid} is outside the {GRID_WIDTH}-column grid")
        for other_label, (ox, oy, ow, oh) in boxes:
            if x < ox + ow and ox < x + w and y < oy + oh and oy < y + h:
                failures.add(where, f"{label} overlaps {other_label}")
        boxes.append((label, (x, y, w, h)))


def check_dashboard(path: Path, failures: Failures) -> tuple[dict, int, list[tuple[str, str]]] | None:
    """Static checks of one dashboard. Returns it, its panel count (rows included) and its
    (label, expr) queries."""
    where = str(path)
    try:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        failures.add(where, f"cannot read: {err}")
        return None
    except json.JSONDecodeError as err:
        failures.add(where, f"invalid JSON: {err}")
        return None
    if not isinstance(dashboard, dict):
        failures.add(where, "the top level is not a JSON object")
        return None
    if not dashboard.get("uid"):
        failures.add(where, "the dashboard has no uid (provisioned links would change on reload)")

    for string_path, text in walk_strings(dashboard):
        if "${DS_" in text:
            failures.add(where, f"{string_path} contains a ${{DS_...}} placeholder: {text!r}")

    queries: list[tuple[str, str]] = []
    ids: dict[object, str] = {}
    panel_count = 0
    for panel, label, _nested in iter_panels(dashboard.get("panels", [])):
        panel_count += 1
        if "id" in panel:
            if panel["id"] in ids:
                failures.add(where, f"{label} reuses the id of {ids[panel['id']]}")
            ids[panel["id"]] = label
        targets = panel.get("targets") or []
        if not targets:
            continue
        if datasource_uid(panel.get("datasource")) != DS_UID:
            failures.add(where, f"{label} datasource is {panel.get('datasource')!r}, "
                                f"not uid {DS_UID!r}")
        for target in targets:
            ref = f'{label} target {target.get("refId", "?")}'
            if "datasource" in target and datasource_uid(target["datasource"]) != DS_UID:
                failures.add(where, f"{ref} datasource is {target['datasource']!r}, "
                                    f"not uid {DS_UID!r}")
            expr = target.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                failures.add(where, f"{ref} has no expr")
                continue
            queries.append((ref, expr))

    # Top-level panels share one grid; a collapsed row's nested panels form their own.
    top = dashboard.get("panels", [])
    check_layout(top, where, failures)
    for panel in top:
        if panel.get("panels"):
            check_layout(panel["panels"], f'{where} row "{panel.get("title", "")}"', failures)

    return dashboard, panel_count, queries


def parse_datasources(text: str) -> list[dict[str, str]]:
    """The scalar keys of each item of the top-level `datasources:` list of a provisioning
    file. A deliberately small YAML reader (no PyYAML in the standard library): enough for
    the block style Grafana's provisioning files use."""
    items: list[dict[str, str]] = []
    in_list = False
    item_indent = None
    key_indent = None
    for raw in text.splitlines():
        line = re.sub(r"\s+#.*$", "", raw) if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        stripped = line.strip()
        if indent == 0 and not stripped.startswith("- "):  # a top-level key
            in_list = stripped.startswith("datasources:")
            item_indent = None
            continue
        if not in_list:
            continue
        if stripped.startswith("- ") and (item_indent is None or indent == item_indent):
            item_indent = indent
            key_indent = indent + 2
            items.append({})
            stripped = stripped[2:].strip()
            indent = key_indent
        if not items or indent != key_indent:
            continue  # nested mappings such as jsonData
        match = re.match(r"([\w.-]+):\s*(.*)$", stripped)
        if match:
            items[-1][match.group(1)] = match.group(2).strip().strip("\"'")
    return items


def provisioned_uids(path: Path) -> set[str]:
    """The datasource uids of every provisioning file in path's directory."""
    uids: set[str] = set()
    for file in sorted(path.parent.glob("*.y*ml")):
        try:
            uids.update(i["uid"] for i in parse_datasources(file.read_text(encoding="utf-8")) if i.get("uid"))
        except OSError:
            continue
    return uids


def check_explore_links(dashboard: dict, where: str, uids: set[str], failures: Failures) -> int:
    """Links to /explore: their `panes` JSON parses and names only provisioned datasources.
    Returns how many were checked."""
    links = [(f"dashboard link {link.get('title', '')!r}", link) for link in dashboard.get("links") or []]
    for panel, label, _nested in iter_panels(dashboard.get("panels", [])):
        links += [(f"{label} link {link.get('title', '')!r}", link) for link in panel.get("links") or []]
    checked = 0
    for label, link in links:
        url = urllib.parse.urlsplit(str(link.get("url", "")))
        if not url.path.endswith("/explore"):
            continue
        checked += 1
        panes = urllib.parse.parse_qs(url.query).get("panes")
        try:
            panes_json = json.loads(panes[0]) if panes else None
        except json.JSONDecodeError as err:
            failures.add(where, f"{label}: its panes= is not JSON: {err}")
            continue
        if not isinstance(panes_json, dict) or not panes_json:
            failures.add(where, f"{label}: an Explore link without panes=")
            continue
        for pane in panes_json.values():
            named = [pane.get("datasource")] + [
                datasource_uid(q.get("datasource")) for q in pane.get("queries") or [] if q.get("datasource")]
            for uid in named:
                if uid not in uids:
                    failures.add(where, f"{label}: datasource {uid!r} is not provisioned "
                                        f"(provisioned uids: {sorted(uids)})")
    return checked


def check_datasources(path: Path, failures: Failures) -> None:
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        failures.add(where, f"cannot read the datasource provisioning file: {err}")
        return
    items = parse_datasources(text)
    if not items:
        failures.add(where, "no `datasources:` list found")
        return
    if not any(i.get("type") == "prometheus" and i.get("uid") == DS_UID for i in items):
        found = [(i.get("name"), i.get("type"), i.get("uid")) for i in items]
        failures.add(where, f"no prometheus datasource pins uid {DS_UID!r} "
                            f"(found name/type/uid: {found})")


def substitute_variables(expr: str, dashboard: dict) -> tuple[str, list[str]]:
    """Replaces Grafana variables for evaluation. Returns the query and unknown names."""
    unknown: list[str] = []
    template_names = {v.get("name") for v in dashboard.get("templating", {}).get("list", [])}

    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name in BUILTIN_VARIABLES:
            return BUILTIN_VARIABLES[name]
        if name.startswith("__"):
            unknown.append(name)
            return match.group(0)
        if name in template_names:
            # A dashboard variable: any value. Fits `label=~"$var"`; in an exact matcher it
            # just selects nothing, which is not an error.
            return ".*"
        unknown.append(name)
        return match.group(0)

    return VARIABLE_RE.sub(replace, expr), unknown


def evaluate(base_url: str, query: str, timeout: float) -> str | None:
    """Runs an instant query. Returns None on success, else Prometheus' error message."""
    url = base_url.rstrip("/") + "/api/v1/query"
    data = urllib.parse.urlencode({"query": query}).encode()
    request = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.load(response)
    except urllib.error.HTTPError as err:
        # 400/422/503 carry Prometheus' JSON error body.
        try:
            body = json.loads(err.read().decode("utf-8", "replace"))
        except (ValueError, OSError):
            return f"HTTP {err.code} {err.reason}"
    if body.get("status") != "success":
        return f'{body.get("errorType", "error")}: {body.get("error", body)}'
    return None


def check_prometheus_reachable(base_url: str, timeout: float) -> str | None:
    try:
        return evaluate(base_url, "vector(1)", timeout)
    except (urllib.error.URLError, OSError, ValueError) as err:
        return f"cannot query {base_url}: {err}"


def shorten(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dashboards", nargs="*", type=Path,
                        help=f"dashboard JSON files (default: {DEFAULT_DASHBOARDS}/*.json)")
    parser.add_argument("--datasources", type=Path, default=DEFAULT_DATASOURCES,
                        help="datasource provisioning file (default: %(default)s)")
    parser.add_argument("--prometheus", metavar="URL",
                        help="also evaluate every query against this Prometheus")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds per HTTP request in live mode (default: %(default)s)")
    args = parser.parse_args(argv)

    paths = args.dashboards or sorted(DEFAULT_DASHBOARDS.glob("*.json"))
    if not paths:
        parser.error(f"no dashboards given and none in {DEFAULT_DASHBOARDS}")

    failures = Failures()
    check_datasources(args.datasources, failures)
    checked = []
    uids = provisioned_uids(args.datasources)
    explore_links = 0
    for path in paths:
        result = check_dashboard(path, failures)
        if result:
            checked.append((path, *result))
            explore_links += check_explore_links(result[0], str(path), uids, failures)

    evaluated = 0
    if args.prometheus and not failures.messages:
        problem = check_prometheus_reachable(args.prometheus, args.timeout)
        if problem:
            failures.add(args.prometheus, problem)
        else:
            for path, dashboard, _, queries in checked:
                for label, expr in queries:
                    query, unknown = substitute_variables(expr, dashboard)
                    if unknown:
                        failures.add(str(path), f"{label} uses unknown variable(s) "
                                                f"{', '.join('$' + n for n in unknown)}")
                        continue
                    try:
                        error = evaluate(args.prometheus, query, args.timeout)
                    except (urllib.error.URLError, OSError, ValueError) as err:
                        error = f"request failed: {err}"
                    evaluated += 1
                    if error:
                        failures.add(str(path), f"{label}: Prometheus rejected {query!r}: {error}")

    if failures.messages:
        for message in failures.messages:
            print(f"FAIL {message}", file=sys.stderr)
        print(f"check_dashboard: {len(failures.messages)} problem(s)", file=sys.stderr)
        return 1

    panels = sum(count for _, _, count, _ in checked)
    queries = sum(len(q) for _, _, _, q in checked)
    summary = (f"OK: {len(checked)} dashboard(s), {panels} panels (rows included), "
               f"{queries} queries and {explore_links} Explore links checked; "
               f"datasource uid {DS_UID!r} pinned in {shorten(args.datasources)}")
    if args.prometheus:
        summary += f"; {evaluated} queries evaluated against {args.prometheus}"
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
