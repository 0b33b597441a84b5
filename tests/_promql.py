"""Every PromQL expression the project ships, in one place: rules, annotation queries, dashboard.

Shared by tests/test_rules.py (static checks, promtool) and tests/test_dashboard.py (a real Prometheus
evaluates all of them). Why one extractor: a panel or rule missed here would be evaluated by nobody,
so the tests count what they extract against the files (every panel target, every rule).

Grafana variables are substituted the way Grafana does it: ``$instance`` is a multi-value variable,
so its value is regex-escaped (``127\\\\.0\\\\.0\\\\.1:9731`` inside the PromQL string), as Grafana's
Prometheus data source does for multi/includeAll variables.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "config" / "alerts.yml"
DASHBOARD = ROOT / "dashboards" / "socket_exporter.json"
#: The fleet's files (docs/fleet.md): roll-ups for the scraping tier, alerts and dashboard
#: for the global tier.
RECORDING = ROOT / "config" / "recording.yml"
FLEET_ALERTS = ROOT / "config" / "fleet-alerts.yml"
FLEET_DASHBOARD = ROOT / "dashboards" / "socket_exporter_fleet.json"
DOCS = ROOT / "docs" / "runbooks.md"  # the alert and threshold tables, one runbook heading per alert

#: Metrics Prometheus itself makes (per target, or from the rules); everything else must be exported.
PROMETHEUS_METRICS = frozenset({"up", "scrape_duration_seconds", "ALERTS"})
#: Label matchers hold job and instance; Prometheus query strings in annotations use %q for them.
_ANNOTATION_QUERY = re.compile(r"printf `([^`]*)`")


def load_rules(path: Path = RULES) -> list[dict[str, Any]]:
    """All rules of a rule file (config/alerts.yml by default), in file order (recording and alerting)."""
    doc = yaml.safe_load(path.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alerts(path: Path = RULES) -> list[dict[str, Any]]:
    return [r for r in load_rules(path) if "alert" in r]


def thresholds() -> dict[str, float]:
    """threshold name -> value, from the ``socket_exporter:alert_threshold`` recording rules."""
    out: dict[str, float] = {}
    for rule in load_rules():
        if rule.get("record") == "socket_exporter:alert_threshold":
            match = re.fullmatch(r"vector\(([0-9.]+)\)", rule["expr"].strip())
            assert match, f"threshold rule is not vector(<number>): {rule}"
            out[rule["labels"]["threshold"]] = float(match.group(1))
    return out


def annotation_queries(job: str = "socket_exporter", instance: str = "127.0.0.1:9731",
                       path: Path = RULES) -> list[str]:
    """PromQL inside the annotation templates, with printf's %q filled as the alert would fill them."""
    queries = []
    for rule in alerts(path):
        for text in rule.get("annotations", {}).values():
            for raw in _ANNOTATION_QUERY.findall(text):
                head, *rest = raw.split("%q")  # printf's arguments: job, instance[, pid, process]
                filled = zip([job, instance, "4242", "java"], rest, strict=False)
                queries.append(head + "".join(json.dumps(value) + part for value, part in filled))
    return queries


@dataclass(frozen=True)
class Target:
    """One dashboard query: the panel it feeds, the raw expression and whether Grafana runs it instant."""

    panel: str
    expr: str
    instant: bool


def dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def panels(dash: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every non-row panel, including panels nested in collapsed rows."""
    dash = dash or dashboard()
    out: list[dict[str, Any]] = []
    for panel in dash["panels"]:
        out.extend(panel.get("panels", []) if panel["type"] == "row" else [panel])
    return out


def dashboard_targets(dash: dict[str, Any] | None = None) -> list[Target]:
    return [Target(p["title"], t["expr"], bool(t.get("instant")) and not t.get("range"))
            for p in panels(dash) for t in p["targets"]]


def dashboard_annotation_exprs(dash: dict[str, Any] | None = None) -> list[str]:
    dash = dash or dashboard()
    return [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]


def variable_queries(dash: dict[str, Any] | None = None) -> dict[str, str]:
    """Query variable name -> its ``label_values(...)`` query."""
    dash = dash or dashboard()
    return {v["name"]: v["query"] for v in dash["templating"]["list"] if v["type"] == "query"}


_LABEL_VALUES = re.compile(r"label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)")


def parse_label_values(query: str) -> tuple[str | None, str]:
    """``label_values(sel, label)`` -> (sel, label); Grafana's function, not PromQL."""
    match = _LABEL_VALUES.fullmatch(query.strip())
    assert match, f"not a label_values() query: {query}"
    return match.group("selector"), match.group("label")


def regex_escape(value: str) -> str:
    """Grafana's prometheusSpecialRegexEscape, as the text goes into a PromQL double-quoted string."""
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"[$^*{}\[\]'+?.()|]", lambda m: "\\\\" + m.group(0), value)


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace ``$name``, ``${name}`` and ``[[name]]`` by ``values[name]``; longest names first."""
    for name in sorted(values, key=len, reverse=True):
        for form in (f"${{{name}}}", f"[[{name}]]", f"${name}"):
            expr = expr.replace(form, values[name])
    assert "$" not in expr and "[[" not in expr, f"unsubstituted variable left in {expr}"
    return expr


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:$])([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()")
_KEYWORDS = frozenset({"and", "or", "unless", "offset", "bool", "inf", "nan", "atan2",
                       "group_left", "group_right", "by", "without", "on", "ignoring"})


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: strings, matchers, ranges, grouping and calls removed.

    >>> sorted(metric_names('sum by (status) (x{job="a:b"}) / on() group_left() y:z offset 1h'))
    ['x', 'y:z']
    """
    text = _STRINGS.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\b\d[\w.]*", " ", text)  # numbers and durations (1h, 0.5, 1e3)
    return {name for name in _IDENT.findall(text) if name not in _KEYWORDS}


def all_named_metrics() -> dict[str, set[str]]:
    """metric name -> where it is used ("rule X", "panel Y", ...), over rules, annotations, dashboard."""
    uses: dict[str, set[str]] = {}
    sources = [(f"rule {r.get('alert') or r.get('record')}", r["expr"]) for r in load_rules()]
    sources += [("annotation query", q) for q in annotation_queries()]
    sources += [(f"panel {t.panel}", t.expr) for t in dashboard_targets()]
    sources += [("dashboard annotation", e) for e in dashboard_annotation_exprs()]
    sources += [(f"variable {n}", parse_label_values(q)[0] or "") for n, q in variable_queries().items()]
    for where, expr in sources:
        for name in metric_names(expr):
            uses.setdefault(name, set()).add(where)
    return uses
