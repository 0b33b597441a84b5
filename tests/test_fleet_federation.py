"""Issue 13's proof: two hosts, a Prometheus that scrapes them and records config/recording.yml, and a
global Prometheus that federates only the host-level series; on the global one, every host's recorded
values equal what ``ss`` and ``sysctl`` say inside that host's namespace, and every query of the fleet
dashboard returns data.

The hosts (tests/_fleet.py wires them) hold different populations:

* ``db``: tests/population.py at scale 1, every TCP state once per family (its SYN_SENT sockets wait on
  listen(0) listeners whose one-slot queues are full), built BEFORE the first scrape: its SYN_SENT count
  never moves while Prometheus watches, so its SYN_SENT growth must be exactly 0;
* ``web``: tests/port_population.py, built AFTER the stack is up: a backlog-3 listener flooded by 10
  clients (full queue, SYNs dropped, the refused clients in SYN_SENT: growth > 0), CLOSE_WAIT and
  TIME_WAIT sockets, and 40 local ports of a narrowed ephemeral range towards one destination; plus
  the same scale-1 population as db, so every count differs from db's by port_population's share.

Expected values are computed from ``ss``/``sysctl`` run inside each namespace (tests/reference.py,
tests/ss_ports.py), never from the exporter's code, and compared only when two snapshots taken around
the query agree (TIME_WAIT sockets expire 60 s after they were made; the global tier lags the kernel by a
scrape, an evaluation and a federation). The exporters' own scrape connections are sockets of the
namespaces too, and ``ss`` counts them like everything else.
"""

from __future__ import annotations

import gzip
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests import _promql as pq
from tests._fleet import (
    EXTERNAL_LABELS,
    FEDERATE_EXAMPLE,
    HOSTS,
    LOCAL_ADDR,
    exporters_up,
    fleet_namespaces,
    instance,
    prometheus_tiers,
)
from tests._prometheus import JOB, Stack
from tests._require import require_netns, require_tool
from tests.netns import Netns
from tests.population import socket_population
from tests.reference import ss_counts
from tests.ss_ports import SsTcp, port_range
from tests.test_dashboard import GRAFANA_VARS
from tests.test_fleet_rules import yaml_blocks
from tests.test_listeners_ports import start_population

pytestmark = pytest.mark.root

STATES = ("CLOSE_WAIT", "SYN_SENT", "TIME_WAIT", "ESTABLISHED")
#: The labels a series on the global tier may carry: the host's, the status, the local Prometheus'.
ALLOWED_LABELS = {"__name__", "job", "instance", "status", *EXTERNAL_LABELS}
RECORDED = [r["record"] for r in pq.load_rules(pq.RECORDING)]


@dataclass
class World:
    hosts: dict[str, Netns]
    local: Stack
    global_: Stack
    receiver: Stack
    exporters: dict[str, subprocess.Popen[bytes]]
    syn_sent_before: dict[str, float]


def truth(ns: Netns) -> dict[str, float]:
    """What recording.yml's roll-ups must say for this namespace, from ss and sysctl inside it."""
    counts = ss_counts(ns)
    out = {f"connections {s}": float(sum(counts[(f, "SOCK_STREAM", s)] for f in ("AF_INET", "AF_INET6")))
           for s in STATES}
    ss = SsTcp.take(ns)
    length, limit = ss.listeners()
    out["fill"] = max(min(length[k] / (limit[k] + 1), 1.0) for k in length)
    out["saturated"] = float(sum(1 for k in length if length[k] >= limit[k] and length[k] > 0))
    low, high, reserved = port_range(ns)
    size = high - low + 1 - len(reserved & set(range(low, high + 1)))
    out["ephemeral"] = max(ss.ephemeral(low, high, reserved).values(), default=0) / size
    out["healthy"] = 1.0  # root in a namespace of our own: every stage succeeds (an expectation, not ss)
    return out


#: truth() key -> (recorded name, extra matcher)
RECORDED_AS = {
    **{f"connections {s}": ("instance_status:socket_connections:sum", f'status="{s}"') for s in STATES},
    "fill": ("instance:socket_listen_queue_fill_ratio:max", ""),
    "saturated": ("instance:socket_listen_saturated:count", ""),
    "ephemeral": ("instance:socket_ephemeral_ports_used_ratio:max", ""),
    "healthy": ("instance:socket_exporter_healthy:min", ""),
}


def recorded(stack: Stack, host: str) -> dict[str, float]:
    """The global tier's latest value of each RECORDED_AS series for ``host``."""
    keys = list(RECORDED_AS)
    calls = []
    for key in keys:
        name, extra = RECORDED_AS[key]
        matchers = ", ".join(m for m in (f'instance="{instance(host)}"', extra) if m)
        calls.append(("/api/v1/query", {"query": f"{name}{{{matchers}}}"}))
    out = {}
    for key, answer in zip(keys, stack.api_many(calls), strict=True):
        result = answer.get("data", {}).get("result", [])
        if len(result) == 1:
            out[key] = float(result[0]["value"][1])
    return out


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    require_netns()
    prometheus = require_tool("prometheus")
    require_tool("promtool")
    with ExitStack() as stack:
        mon, hosts, workdir = stack.enter_context(fleet_namespaces())
        stack.enter_context(socket_population(hosts["db"], 1))
        exporters = stack.enter_context(exporters_up(hosts, workdir))
        (readme,) = [b["remote_write"] for b in yaml_blocks() if "remote_write" in b]
        local, global_, receiver = stack.enter_context(prometheus_tiers(mon, prometheus, workdir, readme))
        before = {h: truth(ns)["connections SYN_SENT"] for h, ns in hosts.items()}
        start_population(hosts["web"])
        stack.enter_context(socket_population(hosts["web"], 1))
        yield World(hosts, local, global_, receiver, exporters, before)


def test_global_tier_holds_each_hosts_truth(world: World) -> None:
    deadline, last = time.monotonic() + 90, ""
    while True:
        before = {h: truth(ns) for h, ns in world.hosts.items()}
        got = {h: recorded(world.global_, h) for h in HOSTS}
        after = {h: truth(ns) for h, ns in world.hosts.items()}
        if before == after and got == before:
            break
        last = f"ss before {before}\nglobal {got}\nss after {after}"
        assert time.monotonic() < deadline, f"the global tier never matched ss:\n{last}\n{world.local.logs()}"
        time.sleep(1)
    web, db = before["web"], before["db"]
    print(f"\nmatched on the global tier: web {web}\ndb {db}")
    for state in ("CLOSE_WAIT", "SYN_SENT", "TIME_WAIT"):  # the populations really differ
        assert web[f"connections {state}"] != db[f"connections {state}"], state
    assert web["saturated"] >= 1 and web["fill"] == 1.0 and web["ephemeral"] > db["ephemeral"]
    assert web["connections TIME_WAIT"] >= 15 and web["connections SYN_SENT"] > world.syn_sent_before["web"]


def test_syn_sent_growth_and_drops_follow_the_kernel(world: World) -> None:
    """db's SYN_SENT never moved under Prometheus' eyes: growth exactly 0; web's rose from
    ``syn_sent_before``: growth > 0. web's flooded listener drops SYNs (ss -tmln's dN rises)."""
    assert truth(world.hosts["db"])["connections SYN_SENT"] == world.syn_sent_before["db"]
    growth = {r["metric"]["instance"]: float(r["value"][1])
              for r in world.global_.wait_until("instance:socket_syn_sent:deriv5m > 0")}
    everything = {r["metric"]["instance"]: float(r["value"][1])
                  for r in world.global_.wait_until("instance:socket_syn_sent:deriv5m")}
    assert growth.keys() == {instance("web")} and everything[instance("db")] == 0.0, everything
    drops = sum(SsTcp.take(world.hosts["web"]).drops.values())
    assert drops > 0
    world.global_.wait_until(f'instance:socket_listen_drops:rate5m{{instance="{instance("web")}"}} > 0')


def test_only_host_level_series_travel(world: World) -> None:
    everything = world.global_.api("/api/v1/series", {"match[]": f'{{job="{JOB}"}}'})["data"]
    series = [s for s in everything if not s["__name__"].startswith("ALERTS")]  # the global's own alerts
    names = {s["__name__"] for s in series}
    assert names >= set(RECORDED) and all(":" in n for n in names), names
    assert all(re.match(r"instance(_status)?:socket_", n) for n in names)
    assert {k for s in series for k in s} <= ALLOWED_LABELS
    assert {s["instance"] for s in series} == {instance(h) for h in HOSTS}
    assert all(s["prometheus"] == "local" for s in series), "external labels mark the source Prometheus"


def test_remote_write_sends_only_the_roll_ups(world: World) -> None:
    """README's write_relabel_configs on the scraping tier: the receiver gets the host-level series,
    with the same names and labels as federation brings, and nothing else."""
    world.receiver.wait_until(f"count(instance:socket_exporter_healthy:min) == {len(HOSTS)}")
    series = world.receiver.api("/api/v1/series", {"match[]": '{__name__=~".+"}'})["data"]
    names = {s["__name__"] for s in series}
    assert names >= set(RECORDED) and all(re.match(r"instance(_status)?:socket_", n) for n in names), names
    assert {k for s in series for k in s} <= ALLOWED_LABELS
    assert {s["instance"] for s in series} == {instance(h) for h in HOSTS}


def test_federation_match_keeps_per_pid_series_home(world: World) -> None:
    """Why the example's match[] is not ``{__name__=~".+:.+"}``: that one also takes alerts.yml's
    per-process recordings (pid and process labels) off the scraping Prometheus."""
    (match,) = yaml.safe_load(FEDERATE_EXAMPLE.read_text())["scrape_configs"][0]["params"]["match[]"]
    url = f"http://{LOCAL_ADDR}/federate"
    [(code_all, every), (code, ours)] = world.local.get([(url, {"match[]": '{__name__=~".+:.+"}'}),
                                                        (url, {"match[]": match})])
    assert code_all == code == 200
    assert 'pid="' in every and "process:socket_close_wait:sum" in every
    assert 'pid="' not in ours and "netns=" not in ours and "pod_" not in ours
    samples = [line for line in ours.splitlines() if line and not line.startswith("#")]
    # alerts.yml's host-level sums travel too (its :baseline series once there is an hour of history)
    assert {line.split("{")[0] for line in samples} == {*RECORDED, "instance:socket_close_wait:sum",
                                                        "instance:socket_syn_sent:sum"}
    assert len(samples) == len(HOSTS) * (len(RECORDED) + len(STATES) - 1 + 2)
    print(f"\nfederation per host: {len(samples) / len(HOSTS):.0f} series, {len(ours) / len(HOSTS):.0f} bytes "
          f"plain, {len(gzip.compress(ours.encode())) / len(HOSTS):.0f} bytes gzip")


def _query(stack: Stack, expr: str, instant: bool) -> dict[str, Any]:
    now = time.time()
    if instant:
        return stack.api("/api/v1/query", {"query": expr, "time": now})
    return stack.api("/api/v1/query_range", {"query": expr, "start": now - 20, "end": now, "step": 1})


def test_every_fleet_dashboard_query_returns_data_on_the_global_tier(world: World) -> None:
    dash = pq.dashboard(pq.FLEET_DASHBOARD)
    problems = []
    for t in pq.dashboard_targets(dash):
        expr = pq.substitute(t.expr, GRAFANA_VARS)
        answer = _query(world.global_, expr, t.instant)
        if answer.get("status") != "success" or not answer["data"]["result"]:
            problems.append(f"{t.panel}: {expr}: {answer.get('error') or 'no data'}")
        elif t.panel.startswith("Hosts by ") or t.panel == "Least healthy exporters":
            hosts = {r["metric"].get("instance") for r in answer["data"]["result"]}
            if hosts != {instance(h) for h in HOSTS}:
                problems.append(f"{t.panel}: ranks {hosts}")
    for name, query in pq.variable_queries(dash).items():
        selector, label = pq.parse_label_values(query)
        values = world.global_.api(f"/api/v1/label/{label}/values", {"match[]": selector})["data"]
        if values != [JOB]:
            problems.append(f"variable {name}: {values}")
    assert problems == []


def test_rules_are_healthy_on_both_tiers(world: World) -> None:
    for stack, files in ((world.local, (pq.RULES, pq.RECORDING)), (world.global_, (pq.FLEET_ALERTS,))):
        loaded = [r for g in stack.api("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
        assert len(loaded) == sum(len(pq.load_rules(f)) for f in files)
        assert [(r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"] == []
    local = [r for g in world.local.api("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
    by_group: dict[str, set[str]] = {}
    for group in world.local.api("/api/v1/rules")["data"]["groups"]:
        by_group[group["name"]] = {r["name"] for r in group["rules"] if r["type"] == "recording"}
    assert by_group["socket_exporter_fleet"] == set(RECORDED)
    assert by_group["socket_exporter_fleet"].isdisjoint(by_group["socket_exporter"]) and local
    # Both hosts have a full accept queue: the global tier's alert is pending for each (for: 5m).
    pending = world.global_.wait_until('ALERTS{alertname="FleetSocketListenerSaturated", alertstate="pending"}')
    assert {r["metric"]["instance"] for r in pending} == {instance(h) for h in HOSTS}


def test_a_host_whose_exporter_stops_is_blind_on_the_global_tier(world: World) -> None:
    """Last: stops db's exporter. Its collector series go stale; recording.yml falls back to `up`."""
    db = instance("db")
    world.exporters["db"].terminate()
    world.exporters["db"].wait(10)
    world.global_.wait_until(f'instance:socket_exporter_healthy:min{{instance="{db}"}} == 0')
    assert world.global_.wait_until(f'instance:socket_exporter_healthy:min{{instance="{instance("web")}"}} == 1')
