"""The fleet dashboard's model: built only on config/recording.yml's series, every ranking drills down.

What runs it against data is tests/test_fleet_federation.py: every query here must return data on a
global Prometheus that holds nothing but the federated host-level series. This file checks what a
Prometheus cannot: the JSON shape (as tests/test_dashboard.py does for the per-host dashboard), that
no query reads a raw exporter series (those never reach the global tier), and that each ranking's
drill-down link opens the per-host dashboard with the host, the job and the time range, in variables
that dashboard has.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

from tests import _promql as pq
from tests.test_dashboard import _SELECTOR, assert_layout, assert_panels

RANKINGS = ("Hosts by CLOSE_WAIT", "Hosts by SYN_SENT growth", "Hosts by saturated listeners",
            "Hosts by ephemeral-port use")
PER_HOST_UID = "socket-exporter"


def test_dashboard_is_a_portable_classic_dashboard() -> None:
    dash = pq.dashboard(pq.FLEET_DASHBOARD)
    assert dash["uid"] == "socket-exporter-fleet" and dash["id"] is None
    assert "__inputs" not in dash and "__requires" not in dash and dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    kinds = [variables[n]["type"] for n in ("datasource", "host_datasource", "job")]
    assert kinds == ["datasource", "datasource", "query"]
    assert variables["job"]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert_panels(dash, pq.FLEET_DASHBOARD, RANKINGS)
    assert_layout(dash)


def test_every_query_reads_only_recorded_series_of_recording_yml() -> None:
    dash = pq.dashboard(pq.FLEET_DASHBOARD)
    recorded = {r["record"] for r in pq.load_rules(pq.RECORDING) if "record" in r}
    exprs = [t.expr for t in pq.dashboard_targets(dash)] + pq.dashboard_annotation_exprs(dash)
    exprs += [pq.parse_label_values(q)[0] or "" for q in pq.variable_queries(dash).values()]
    used: set[str] = set()
    for expr in exprs:
        names = pq.metric_names(expr)
        assert names and names <= recorded, f"{expr} reads {names - recorded}"
        used |= names
        for window in re.findall(r"\[([^\]]*)\]", expr):
            assert window in ("$__rate_interval", "$__interval", "$__range"), expr
        for _name, matchers in _SELECTOR.findall(expr):
            assert 'job=~"$job"' in matchers, expr
    assert used == recorded, f"recorded but never shown: {recorded - used}"


def test_rankings_drill_down_to_the_per_host_dashboard() -> None:
    dash = pq.dashboard(pq.FLEET_DASHBOARD)
    per_host = {v["name"] for v in pq.dashboard()["templating"]["list"]}
    fleet_vars = {v["name"] for v in dash["templating"]["list"]}
    by_title = {p["title"]: p for p in pq.panels(dash)}
    linked = [p for p in pq.panels(dash) if p["fieldConfig"]["defaults"].get("links")]
    assert set(RANKINGS) <= {p["title"] for p in linked}
    for panel in linked:
        if panel["type"] == "bargauge":  # one bar per host: the ranking's query keeps the host labels
            (target,) = panel["targets"]
            assert target["instant"] and re.match(r"(topk|bottomk)\(20, ", target["expr"]), panel["title"]
            assert "{{instance}}" in target["legendFormat"]
        (link,) = panel["fieldConfig"]["defaults"]["links"]
        url = urlsplit(link["url"])
        assert url.path == f"/d/{PER_HOST_UID}/socket-exporter", panel["title"]
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        assert params["var-instance"] == "${__field.labels.instance:percentencode}", panel["title"]
        assert params["var-job"] == "${__field.labels.job:percentencode}", panel["title"]
        assert params["var-datasource"] == "${host_datasource}" and "${__url_time_range}" in url.query
        assert {k[4:] for k in params if k.startswith("var-")} <= per_host, "the per-host dashboard lacks a variable"
        assert "host_datasource" in fleet_vars
    assert pq.dashboard()["uid"] == PER_HOST_UID
    assert by_title["Hosts by ephemeral-port use"]["fieldConfig"]["defaults"]["unit"] == "percentunit"
