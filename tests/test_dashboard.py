"""The Grafana dashboard and the rules against a real Prometheus that scraped the real exporter.

Grafana is not available, so its part is emulated where it matters for PromQL: variables substituted
as Grafana does ($instance regex-escaped, $__rate_interval = 4 x the 1 s scrape interval), instant
targets run as instant queries and the rest as range queries. What is asserted, and why:

* every dashboard target evaluates without error AND returns series: a typo'd label or metric gives
  an empty panel, not an error, so "no error" alone would pass a broken dashboard;
* every rule expression and annotation query evaluates, and Prometheus reports every loaded rule
  healthy (it evaluated them each second against the same data);
* every metric named anywhere is one the exporter serves (or Prometheus makes: up, ALERTS...).

The static model checks at the top need no root; the rest runs in the population's namespace.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import _promql as pq
from tests._prometheus import EXPORTER_ADDR, JOB, Stack, prometheus_stack
from tests._require import require_tool
from tests.population import Population

GRAFANA_VARS = {
    "job": JOB,
    "instance": pq.regex_escape(EXPORTER_ADDR),
    "__interval": "1s", "__interval_ms": "1000",
    "__rate_interval": "4s",
    "__range": "20s", "__range_s": "20", "__range_ms": "20000",
}  # fmt: skip
PROVISIONING = pq.ROOT / "dashboards" / "provisioning"
REQUIRED_PANELS = (
    "Sockets by status", "CLOSE_WAIT now", "SYN_SENT now", "Top processes by sockets",
    "Top processes by CLOSE_WAIT", "Sockets by family and type", "Collection stage duration",
    "Stage failure ratio", "Source in use",
    "Accept queue against its limit", "CLOSE_WAIT by service port", "Ephemeral range in use (busiest destination)",
)  # fmt: skip
_SELECTOR = re.compile(r"\b([a-zA-Z_][\w:]*)\{([^}]*)\}")
#: Served only with network_namespaces: all; the "by pod/container" row and these are checked against a
#: real Prometheus in that mode by tests/test_dashboard_pods.py.
ALL_MODE_ONLY = {"socket_namespace_connections", "socket_namespaces", "socket_namespace_tables_skipped"}
POD_ROW = "by pod/container"


def row_titles(row: str) -> list[str]:
    """Titles of the panels under the row titled ``row`` (up to the next row)."""
    titles, inside = [], False
    for panel in pq.dashboard()["panels"]:
        if panel["type"] == "row":
            inside = panel["title"] == row
        elif inside:
            titles.append(panel["title"])
    return titles


# ---- the dashboard model (no root needed) ----------------------------------------------------------
def test_dashboard_is_a_portable_classic_dashboard() -> None:
    dash = pq.dashboard()
    assert dash["uid"] == "socket-exporter" and dash["id"] is None
    assert "__inputs" not in dash and "__requires" not in dash
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert variables["instance"]["multi"] and variables["instance"]["includeAll"]
    assert "$job" in variables["instance"]["query"], "instance must be scoped to the chosen job"
    assert_panels(dash, pq.DASHBOARD, REQUIRED_PANELS)


def assert_panels(dash: dict[str, Any], path: Path, required: Sequence[str]) -> None:
    """Every panel reads the ``datasource`` variable and says what it shows; the query extractor
    misses none of the file's queries; the ``required`` panels exist and no title is used twice."""
    for panel in pq.panels(dash):
        refs = [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]
        assert all(r == {"type": "prometheus", "uid": "${datasource}"} for r in refs), panel["title"]
        assert panel["targets"] and panel.get("description"), panel["title"]
    raw_exprs = path.read_text().count('"expr":')
    assert raw_exprs == len(pq.dashboard_targets(dash)) + len(pq.dashboard_annotation_exprs(dash))
    titles = [p["title"] for p in pq.panels(dash)]
    assert [t for t in required if t not in titles] == []
    assert len(titles) == len(set(titles))


def test_layout_has_unique_ids_and_no_overlaps() -> None:
    assert_layout(pq.dashboard())


def assert_layout(dash: dict[str, Any]) -> None:
    """Unique panel ids, every panel inside the 24-column grid, no two panels on one cell."""
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_queries_follow_the_variables() -> None:
    """Ranges come from Grafana's interval variables (never a fixed duration, which breaks when the
    scrape interval or the zoom changes), rates use $__rate_interval, and every selector of an
    exporter metric is scoped to $job and $instance."""
    exprs = [t.expr for t in pq.dashboard_targets()] + pq.dashboard_annotation_exprs()
    for expr in exprs:
        for window in re.findall(r"\[([^\]]*)\]", expr):
            assert window.split(":")[0] in ("$__rate_interval", "$__interval", "$__range"), expr
        for fn in re.findall(r"\b(i?rate|increase|irate)\s*\(", expr):
            assert "[$__rate_interval]" in expr, f"{fn} without $__rate_interval: {expr}"
        for name, matchers in _SELECTOR.findall(expr):
            if ":" not in name:
                assert 'job="$job"' in matchers and 'instance=~"$instance"' in matchers, expr


def test_provisioning_loads_the_dashboard_folder() -> None:
    doc = yaml.safe_load((PROVISIONING / "dashboards.yml").read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    ds = yaml.safe_load((PROVISIONING / "datasource.example.yml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus"


def test_grafana_substitution_matches_grafana() -> None:
    assert pq.regex_escape("127.0.0.1:9731") == "127\\\\.0\\\\.0\\\\.1:9731"
    assert pq.substitute('x{i=~"$instance",j="${job}"}[$__rate_interval]', GRAFANA_VARS) == (
        'x{i=~"127\\\\.0\\\\.0\\\\.1:9731",j="socket_exporter"}[4s]')
    with pytest.raises(AssertionError):
        pq.substitute("x[$__unknown]", GRAFANA_VARS)


# ---- a real Prometheus (root, namespaces) ----------------------------------------------------------
@pytest.fixture(scope="module")
def stack(population: Population) -> Iterator[Stack]:
    prometheus = require_tool("prometheus")
    with prometheus_stack(population.ns, prometheus) as s:
        yield s


def _result(answer: dict[str, Any], what: str) -> list[dict[str, Any]]:
    assert answer.get("status") == "success", f"{what}: {answer.get('errorType')} {answer.get('error')}"
    return list(answer["data"]["result"])


@pytest.mark.root
def test_every_dashboard_panel_returns_data(stack: Stack) -> None:
    targets = [t for t in pq.dashboard_targets() if t.panel not in row_titles(POD_ROW)]  # own mode here
    assert len(targets) >= len(REQUIRED_PANELS)
    now = time.time()
    calls = []
    for t in targets:
        expr = pq.substitute(t.expr, GRAFANA_VARS)
        calls.append(("/api/v1/query", {"query": expr, "time": now}) if t.instant else
                     ("/api/v1/query_range", {"query": expr, "start": now - 20, "end": now, "step": 1}))
    problems = []  # all of them, not just the first
    for t, answer, (_, params) in zip(targets, stack.api_many(calls), calls, strict=True):
        if answer.get("status") != "success":
            problems.append(f"{t.panel}: {params['query']}: {answer.get('error')}")
        elif not answer["data"]["result"]:
            problems.append(f"{t.panel}: {params['query']}: no data")
    assert problems == [], stack.logs()


@pytest.mark.root
def test_dashboard_variables_and_annotations_resolve(stack: Stack) -> None:
    values = {}
    for name, query in pq.variable_queries().items():
        selector, label = pq.parse_label_values(query)
        answer = stack.api(f"/api/v1/label/{label}/values",
                           {"match[]": pq.substitute(selector or "{__name__!=''}", {"job": JOB})})
        assert answer.get("status") == "success", f"{query}: {answer}"
        values[name] = answer["data"]
    assert values == {"job": [JOB], "instance": [EXPORTER_ADDR]}
    for expr in pq.dashboard_annotation_exprs():
        _result(stack.api("/api/v1/query", {"query": pq.substitute(expr, GRAFANA_VARS)}), expr)


@pytest.mark.root
def test_every_rule_and_annotation_query_evaluates(stack: Stack) -> None:
    rules = pq.load_rules()
    exprs = [r["expr"] for r in rules] + pq.annotation_queries(JOB, EXPORTER_ADDR)
    answers = stack.api_many([("/api/v1/query", {"query": e}) for e in exprs])
    for expr, answer in zip(exprs, answers, strict=True):
        _result(answer, expr)
    loaded = [r for g in stack.api("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
    assert len(loaded) == len(rules)
    unhealthy = [(r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok" or r.get("lastError")]
    assert unhealthy == []
    assert _result(stack.api("/api/v1/query", {"query": "instance:socket_close_wait:sum"}), "recorded sum")


@pytest.mark.root
def test_panels_show_the_population(stack: Stack, population: Population) -> None:
    """The data is the namespace's, not the host's: the population's CLOSE_WAIT sockets are counted
    and one of its workers (comm sockpop-*) tops the CLOSE_WAIT owners."""
    made = sum(n for (_, _, status), n in population.counts_made.items() if status == "CLOSE_WAIT")
    assert made > 0
    query = f'sum(socket_connections{{job="{JOB}", status="CLOSE_WAIT"}})'
    close_wait = _result(stack.api("/api/v1/query", {"query": query}), query)
    assert float(close_wait[0]["value"][1]) >= made
    panel = next(t for t in pq.dashboard_targets() if t.panel == "Top processes by CLOSE_WAIT")
    top = pq.substitute(panel.expr, GRAFANA_VARS)
    owners = {r["metric"]["process"]: float(r["value"][1])
              for r in _result(stack.api("/api/v1/query", {"query": top}), top)}
    # max, not all: a scrape connection may sit in CLOSE_WAIT for an instant, one socket at most
    assert max(owners, key=owners.__getitem__).startswith("sockpop-"), owners


@pytest.mark.root
def test_every_named_metric_is_exported(stack: Stack) -> None:
    exported = set(re.findall(r"^# TYPE (\S+) ", stack.metrics_text(), re.M))
    assert "socket_connections" in exported
    recorded = {r["record"] for r in pq.load_rules() if "record" in r}
    unknown = {name: sorted(where) for name, where in pq.all_named_metrics().items()
               if name not in (recorded if ":" in name else exported | pq.PROMETHEUS_METRICS | ALL_MODE_ONLY)}
    assert unknown == {}
