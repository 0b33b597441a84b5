"""The dashboard's "by pod/container" row and the per-pod rules against a real Prometheus.

The exporter runs with ``--network-namespaces all`` beside Prometheus (tests/_prometheus.py), while a
fake pod lives next to them: a namespace holding the socket population (every TCP state), its
processes in a kubelet-shaped cgroup (v1 cgroupfs, burstable) and a ``/var/log/pods`` directory
naming it. Every panel of the row must return data, the pod must show up under its uid and name, and
its CLOSE_WAIT count must be what ``ss`` says inside it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from tests import _promql as pq
from tests._prometheus import Stack, prometheus_stack
from tests._require import require, require_netns, require_tool
from tests.kubelet_cgroups import fake_cgroup, new_ids, usable
from tests.netns import Netns
from tests.population import socket_population
from tests.reference import ss_counts
from tests.test_dashboard import ALL_MODE_ONLY, GRAFANA_VARS, POD_ROW, row_titles

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def pod_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Netns, str]]:
    require_netns()
    prometheus = require_tool("prometheus")
    require(usable("v1-cgroupfs"), "needs a writable v1 pids cgroup hierarchy")
    logs = tmp_path_factory.mktemp("pods")
    uid, cid = new_ids()
    with ExitStack() as stack:
        pod = stack.enter_context(Netns())
        stack.enter_context(socket_population(pod, 1))
        stack.enter_context(fake_cgroup("v1-cgroupfs", uid, cid, pod.pids()))
        (logs / f"shop_api-0_{uid}").mkdir()
        home = stack.enter_context(Netns())
        args = ("--network-namespaces", "all", "--path.pod-logs", str(logs))
        yield stack.enter_context(prometheus_stack(home, prometheus, args)), pod, uid


def _query(stack: Stack, expr: str, instant: bool) -> dict[str, Any]:
    """Instant queries retry for a while: on a loaded machine an ``all``-mode scrape can outlast the
    stack's 1 s scrape timeout, and the series are then stale for an instant."""
    deadline = time.monotonic() + 30
    while True:
        now = time.time()
        if not instant:
            return stack.api("/api/v1/query_range", {"query": expr, "start": now - 20, "end": now, "step": 1})
        answer = stack.api("/api/v1/query", {"query": expr, "time": now})
        if answer.get("status") != "success" or answer["data"]["result"] or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


def test_pod_row_panels_return_the_pod(pod_stack: tuple[Stack, Netns, str]) -> None:
    stack, _, uid = pod_stack
    titles = row_titles(POD_ROW)
    assert len(titles) >= 4
    problems = []
    for t in pq.dashboard_targets():
        if t.panel not in titles:
            continue
        answer = _query(stack, pq.substitute(t.expr, GRAFANA_VARS), t.instant)
        if answer.get("status") != "success" or not answer["data"]["result"]:
            problems.append(f"{t.panel}: {t.expr}: {answer.get('error') or 'no data'}")
        elif "socket_namespace_connections" in t.expr:
            pods = {r["metric"].get("pod_uid") for r in answer["data"]["result"]}
            if uid not in pods:
                problems.append(f"{t.panel}: pod {uid} missing from {pods}")
    assert problems == [], stack.logs()


def test_pod_close_wait_equals_ss_inside_it(pod_stack: tuple[Stack, Netns, str]) -> None:
    stack, pod, uid = pod_stack
    panel = next(t for t in pq.dashboard_targets() if t.panel == "Top pods/containers by CLOSE_WAIT")
    expected = sum(n for (_, _, status), n in ss_counts(pod).items() if status == "CLOSE_WAIT")
    assert expected > 0
    rows = _query(stack, pq.substitute(panel.expr, GRAFANA_VARS), True)["data"]["result"]
    (mine,) = [r for r in rows if r["metric"].get("pod_uid") == uid]
    assert mine["metric"]["pod_name"] == "api-0" and mine["metric"]["pod_namespace"] == "shop"
    assert float(mine["value"][1]) == expected


def test_pod_rules_evaluate_and_all_mode_metrics_are_exported(pod_stack: tuple[Stack, Netns, str]) -> None:
    stack, _, uid = pod_stack
    answer = stack.wait_until(f'pod:socket_close_wait:sum{{pod_uid="{uid}"}}')
    assert answer[0]["metric"]["pod_name"] == "api-0"
    exported = {line.split()[2] for line in stack.metrics_text().splitlines() if line.startswith("# TYPE ")}
    assert exported >= ALL_MODE_ONLY
    loaded = [r for g in stack.api("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
    assert [r["name"] for r in loaded if r["health"] != "ok"] == []
