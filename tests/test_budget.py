"""The series budget's folding (exporter/exposition/budget.py) on hand-built families: what folds,
in which order, into which bucket, and that sums survive. The real exporter under a budget is
tests/test_series_budget.py."""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterator

import pytest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.exposition.budget import count, fit

KEY = ["family", "type", "status"]
OWNER = ["pid", "process"]
NS = ["netns", "pod_uid", "pod_namespace", "pod_name", "container_id"]


def owners(sizes: dict[str, dict[str, int]], extra: tuple[str, ...] = ()) -> list[Metric]:
    """socket_connections plus socket_process_connections for {pid: {status: n}}."""
    totals: Counter[str] = Counter()
    per = GaugeMetricFamily("socket_process_connections", "", labels=KEY + OWNER)
    for pid, by_status in sizes.items():
        for status, n in by_status.items():
            per.add_metric(["AF_INET", "SOCK_STREAM", status, pid, "(unowned)" if pid == "unowned" else f"p{pid}"], n)
            totals[status] += n
    total = GaugeMetricFamily("socket_connections", "", labels=KEY)
    for status, n in sorted(totals.items()):
        total.add_metric(["AF_INET", "SOCK_STREAM", status], n)
    return [total, per, *(GaugeMetricFamily(name, "", value=1) for name in extra)]


def sums(family: Metric, drop: tuple[str, ...]) -> dict[tuple[tuple[str, str], ...], float]:
    out: Counter[tuple[tuple[str, str], ...]] = Counter()
    for s in family.samples:
        out[tuple(sorted((k, v) for k, v in s.labels.items() if k not in drop))] += s.value  # type: ignore[assignment]
    return dict(out)


def by_pid(family: Metric) -> dict[str, float]:
    out: Counter[str] = Counter()
    for s in family.samples:
        out[s.labels["pid"]] += s.value  # type: ignore[assignment]
    return dict(out)


def test_under_the_limit_nothing_changes() -> None:
    families = owners({"7": {"LISTEN": 1}, "9": {"ESTABLISHED": 3}})
    before = [list(f.samples) for f in families]
    folds: Counter[str] = Counter()
    assert fit(families, count(families), folds) == count(families)
    assert [f.samples for f in families] == before and not folds


def test_docstring_example_smallest_owner_first() -> None:
    families = owners({"7": {"LISTEN": 1}, "9": {"LISTEN": 2}, "8": {"ESTABLISHED": 5}})
    per = families[1]
    totals = families[0]
    folds: Counter[str] = Counter()
    left = fit([per], 2, folds)
    assert left == 2 == len(per.samples)
    assert by_pid(per) == {"other": 3, "8": 5}
    assert folds == {"socket_process_connections": 2}
    assert sums(per, ("pid", "process")) == sums(totals, ())


def test_unowned_and_other_never_fold_and_sums_survive() -> None:
    sizes = {str(pid): {"ESTABLISHED": pid % 7 + 1, "LISTEN": 1} for pid in range(100, 400)}
    sizes["unowned"] = {"TIME_WAIT": 2}
    families = owners(sizes)
    totals, per = families
    want = sums(per, ("pid", "process"))
    folds: Counter[str] = Counter()
    left = fit(families, 100, folds)
    assert left <= 100 and count(families) == left
    assert sums(per, ("pid", "process")) == want == sums(totals, ())
    pids = by_pid(per)
    assert pids["unowned"] == 2 and "other" in pids
    kept = [sum(sizes[p].values()) for p in pids if p not in ("other", "unowned")]
    folded = [sum(sizes[p].values()) for p in sizes if p not in pids and p != "unowned"]
    assert kept and folded and min(kept) >= max(folded)  # the smallest went first
    assert folds["socket_process_connections"] == len(folded)


def test_floor_over_the_limit_keeps_totals() -> None:
    families = owners({str(p): {"ESTABLISHED": 1} for p in range(10)}, extra=("a", "b", "c"))
    totals_before = list(families[0].samples)
    left = fit(families, 2, Counter())
    assert left > 2  # cannot fit: socket_connections + the bucket + three unfoldable gauges
    assert families[0].samples == totals_before
    assert by_pid(families[1]) == {"other": 10}


def ports_family(rows: list[tuple[str, str, str, str, int]]) -> list[Metric]:
    """socket_port_connections and its receive-queue family for (netns, direction, port, status, n)."""
    conns = GaugeMetricFamily("socket_port_connections", "", labels=["direction", "port", "status", "family", *NS])
    recv = GaugeMetricFamily("socket_port_receive_queue_bytes", "", labels=["direction", "port", "family", *NS])
    seen = set()
    for netns, direction, port, status, n in rows:
        ident = [netns, f"uid-{netns}", "ns", f"pod-{netns}", ""]
        conns.add_metric([direction, port, status, "AF_INET", *ident], n)
        if (netns, direction, port) not in seen:
            seen.add((netns, direction, port))
            recv.add_metric([direction, port, "AF_INET", *ident], 10 * n)
    return [conns, recv]


def test_ports_fold_within_their_namespace_and_direction_first() -> None:
    rows = [("1", "inbound", "80", "ESTABLISHED", 50), ("1", "inbound", "81", "ESTABLISHED", 1),
            ("1", "outbound", "5432", "ESTABLISHED", 2), ("2", "inbound", "80", "ESTABLISHED", 1)]
    conns, recv = families = ports_family(rows)
    per_ns = GaugeMetricFamily("socket_namespace_connections", "", labels=KEY + NS)
    for netns, n in (("1", 53), ("2", 1)):
        per_ns.add_metric(["AF_INET", "SOCK_STREAM", "ESTABLISHED", netns, f"uid-{netns}", "ns", f"pod-{netns}", ""], n)
    want = sums(conns, ("port",))
    folds: Counter[str] = Counter()
    assert fit([*families, per_ns], 8, folds) == 8
    assert folds == {"socket_port_connections": 2}  # ports, not namespaces: the cheaper detail goes first
    got = {(s.labels["netns"], s.labels["direction"], s.labels["port"]): s.value for s in conns.samples}
    # 81 folds first (smallest), then 80 joins its bucket; 5432 and namespace 2's 80 are alone in theirs
    assert got == {("1", "inbound", "other"): 51, ("1", "outbound", "5432"): 2, ("2", "inbound", "80"): 1}
    assert sums(conns, ("port",)) == want
    assert len(recv.samples) == len(conns.samples)  # the queue bytes fold along with their port


def test_namespaces_fold_last_with_max_and_min_where_a_sum_lies() -> None:
    fams: list[Metric] = []
    per_ns = GaugeMetricFamily("socket_namespace_connections", "", labels=KEY + NS)
    rng = GaugeMetricFamily("socket_ephemeral_port_range_size", "", labels=NS)
    used = GaugeMetricFamily("socket_ephemeral_ports_max_in_use", "", labels=NS)
    drops = CounterMetricFamily("socket_listen_drops", "", labels=["family", "port", *NS])
    for i, (n, size, inuse) in enumerate(((100, 28232, 10), (3, 1000, 900), (2, 28232, 5))):
        ident = [str(i + 1), f"uid{i}", "ns", f"pod{i}", ""]
        per_ns.add_metric(["AF_INET", "SOCK_STREAM", "ESTABLISHED", *ident], n)
        rng.add_metric(ident, size)
        used.add_metric(ident, inuse)
        drops.add_metric(["AF_INET", "other", *ident], i)
    fams = [per_ns, rng, used, drops]
    folds: Counter[str] = Counter()
    fit(fams, 8, folds)
    assert folds == {"socket_namespace_connections": 2}
    other = {f.name: [s.value for s in f.samples if s.labels["netns"] == "other"] for f in fams}
    assert other["socket_namespace_connections"] == [5]
    assert other["socket_ephemeral_port_range_size"] == [1000]  # min: the tighter range
    assert other["socket_ephemeral_ports_max_in_use"] == [900]  # max: the fuller namespace shows
    assert other["socket_listen_drops"] == [3]  # counts are summed
    assert all(s.labels["pod_uid"] == "" for f in fams for s in f.samples if s.labels["netns"] == "other")


def test_random_families_always_fit_and_keep_their_sums() -> None:
    rng = random.Random(13)
    for _ in range(200):
        sizes = {str(p): {rng.choice(["ESTABLISHED", "LISTEN", "CLOSE_WAIT"]): rng.randint(1, 20)
                          for _ in range(rng.randint(1, 3))} for p in range(rng.randint(1, 60))}
        families = owners(sizes)
        want = sums(families[1], ("pid", "process"))
        limit = rng.randint(3 + 3, 200)  # 3 totals + 3 "other" buckets always fit
        left = fit(families, limit, Counter())
        assert left == count(families) <= limit
        assert sums(families[1], ("pid", "process")) == want


def test_registry_reads_the_limit_per_exposition_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.registry import Collector

    from exporter.exposition.registry import OWN_SAMPLES, BudgetedRegistry

    class Owners(Collector):
        def collect(self) -> Iterator[Metric]:
            yield from owners({str(p): {"ESTABLISHED": p} for p in range(1, 601)})

    limit = [0]
    registry = BudgetedRegistry(lambda: limit[0])
    registry.register(Owners())

    def exposed() -> dict[str, float]:
        text = generate_latest(registry).decode()
        lines = [line for line in text.splitlines() if not line.startswith("#")]
        values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines}
        assert values["socket_exporter_series"] == len(lines)
        return values

    assert exposed()["socket_exporter_series"] == 1 + 600 + OWN_SAMPLES  # no limit: everything
    limit[0] = 500  # a reload: the next exposition uses it
    for scrape in (1, 2):
        values = exposed()
        assert values["socket_exporter_series"] == 500 and values["socket_exporter_series_limit"] == 500
        folded = values['socket_exporter_series_folds_total{family="socket_process_connections"}']
        assert folded == scrape * (600 - (500 - OWN_SAMPLES - 2))  # cumulative; totals + other kept
    limit[0] = 1 + OWN_SAMPLES  # below what never folds: served anyway, one warning for the episode
    with caplog.at_level(logging.WARNING, logger="exporter"):
        assert exposed()["socket_exporter_series"] == 1 + 1 + OWN_SAMPLES  # the totals and pid="other"
        exposed()
    assert len([r for r in caplog.records if "series budget" in r.message]) == 1


def test_a_process_named_like_a_bucket_still_folds() -> None:
    """``other`` and ``unowned`` are names any process may take; only the real buckets never fold."""
    per = GaugeMetricFamily("socket_process_connections", "", labels=KEY + OWNER)
    for pid, name, n in (("10", "other", 1), ("11", "unowned", 1), ("12", "nginx", 9), ("unowned", "(unowned)", 1)):
        per.add_metric(["AF_INET", "SOCK_STREAM", "ESTABLISHED", pid, name], n)
    fit([per], 3, Counter())
    assert {(s.labels["pid"], s.labels["process"]): s.value for s in per.samples} == {
        ("other", "(other)"): 2, ("12", "nginx"): 9, ("unowned", "(unowned)"): 1}
