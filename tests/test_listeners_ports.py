"""Listeners, ports and ephemeral views against ``ss`` in the same namespace (README "Listeners and ports").

The namespace holds tests/port_population.py (a listener with backlog 3 and ten clients, services on
IPv4 and IPv6 with unread bytes both ways, CLOSE_WAIT clients, 45 clients of one destination from
two local addresses) with a narrow ephemeral range and reserved ports. Every expectation comes from
``ss -tan`` / ``ss -tmln`` and ``sysctl`` (tests/ss_ports.py), never from exporter code. A figure is
compared only when two ``ss`` snapshots taken around the scrape agree (SYN retransmits move the drop
counters every few seconds), retried until they do.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests._served import http, running_exporter
from tests.conftest import require_netns
from tests.exposition import run_once, samples
from tests.netns import Netns
from tests.port_population import BACKLOG, DEST, LEAKY
from tests.ss_ports import SsTcp, port_range

RANGE, RESERVED = "41000 41999", "41000-41009,41500"
ROOT = Path(__file__).resolve().parent.parent
Samples = dict[str, list[tuple[dict[str, str], float]]]


def views_config(tmp: Path, max_ports: int = 100, always: tuple[int, ...] = ()) -> Path:
    path = tmp / f"views-{max_ports}.yml"
    path.write_text(f"listeners: {{enabled: true}}\nports: {{enabled: true, always: {list(always)}, "
                    f"max_ports: {max_ports}}}\nephemeral: {{enabled: true, top: 3}}\n")
    return path


def start_population(ns: Netns, ports: str = RANGE, reserved: str = RESERVED) -> subprocess.Popen[str]:
    """tests/port_population.py in ``ns``, with that ephemeral range, once it has made its sockets."""
    ns.run(["sysctl", "-qw", f"net.ipv4.ip_local_port_range={ports}"])
    ns.run(["sysctl", "-qw", f"net.ipv4.ip_local_reserved_ports={reserved}"])
    proc: subprocess.Popen[str] = ns.popen([sys.executable, "-m", "tests.port_population"], cwd=ROOT,
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    json.loads(proc.stdout.readline())
    return proc


@pytest.fixture(scope="module")
def ports_ns() -> Iterator[Netns]:
    require_netns()
    with Netns() as ns:
        start_population(ns)
        yield ns


def stable(ns: Netns, scrape: Callable[[], str], tries: int = 20,
           part: Callable[[SsTcp], object] = lambda ss: ss) -> tuple[Samples, SsTcp]:
    """A scrape with the ss snapshot that held during it (``part`` of it identical before and after)."""
    for _ in range(tries):
        before = SsTcp.take(ns)
        text = scrape()
        if part(SsTcp.take(ns)) == part(before):
            return samples(text), before
    raise AssertionError(f"ss never held still over {tries} scrapes")


def by(s: Samples, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(x[label] for label in labels): v for x, v in s.get(name, [])}


def listener_figures(s: Samples) -> tuple[dict[tuple[str, ...], float], ...]:
    return tuple(by(s, f"socket_listen_{m}", "family", "port") for m in ("queue_length", "queue_limit", "drops_total"))


CONN = ("socket_port_connections", "direction", "port", "status", "family")
RX = ("socket_port_receive_queue_bytes", "direction", "port", "family")
TX = ("socket_port_send_queue_bytes", "direction", "port", "family")


def floats(counts: Mapping[tuple[str, ...], int]) -> dict[tuple[str, ...], float]:
    return {k: float(n) for k, n in counts.items()}


def keyed(d: dict[tuple[str, int], int]) -> dict[tuple[str, str], float]:
    return {(f, str(p)): float(n) for (f, p), n in d.items()}


@pytest.mark.root
def test_every_figure_equals_ss(ports_ns: Netns, tmp_path: Path) -> None:
    cfg = views_config(tmp_path)
    s, ss = stable(ports_ns, lambda: run_once(ports_ns, "--config", str(cfg)))
    length, limit, drops = listener_figures(s)
    ss_length, ss_limit = ss.listeners()
    assert length == keyed(ss_length) and limit == keyed(ss_limit)
    assert length[("AF_INET", str(BACKLOG))] == 4 and limit[("AF_INET", str(BACKLOG))] == 3  # full: limit+1
    assert drops == keyed(ss.drops) and drops[("AF_INET", str(BACKLOG))] > 0
    conns, rx, tx = ss.ports()
    assert by(s, *CONN) == floats(conns)
    assert conns[("outbound", str(LEAKY), "CLOSE_WAIT", "AF_INET")] == 2  # the population did what it says
    assert by(s, *RX) == floats(rx) and by(s, *TX) == floats(tx)
    assert any(v > 0 for v in rx.values()) and any(v > 0 for v in tx.values())
    low, high, reserved = port_range(ports_ns)
    size = high - low + 1 - len(reserved & set(range(low, high + 1)))
    assert by(s, "socket_ephemeral_port_range_size") == {(): float(size)}
    use = ss.ephemeral(low, high, reserved)
    assert by(s, "socket_ephemeral_ports_max_in_use") == {(): float(max(use.values()))}
    assert use[("AF_INET", "127.0.0.1", "127.0.0.1", str(DEST))] == 40  # 25 ESTABLISHED + 15 TIME_WAIT
    top = by(s, "socket_ephemeral_ports_in_use", "family", "local_address", "remote_address", "remote_port")
    assert top == {k: float(n) for k, n in use.most_common(3)}


@pytest.mark.root
def test_port_cap_folds_the_rest_into_other_and_sums_exactly(ports_ns: Netns, tmp_path: Path) -> None:
    cfg = views_config(tmp_path, max_ports=2, always=(LEAKY,))
    s, ss = stable(ports_ns, lambda: run_once(ports_ns, "--config", str(cfg)))
    conns, _, _ = ss.ports()
    size: Counter[tuple[str, str]] = Counter()
    for (direction, port, _status, _family), n in conns.items():
        size[(direction, port)] += n
    pinned = {k for k in size if k[1] == str(LEAKY)}
    rest = Counter({k: n for k, n in size.items() if k not in pinned}).most_common()
    assert rest[1][1] > rest[2][1], f"a tie makes the busiest ports ambiguous: {rest}"
    kept = pinned | {k for k, _ in rest[:2]}
    got = by(s, *CONN)
    assert {(d, p) for d, p, _, _ in got if p != "other"} == kept
    for key, n in got.items():
        if key[1] != "other":
            assert n == conns[key], key
    per_status: Counter[tuple[str, str]] = Counter()
    for (_d, _p, status, family), n in got.items():
        per_status[(status, family)] += int(n)
    totals = by(s, "socket_connections", "status", "family")
    assert dict(per_status) == {k: int(v) for k, v in totals.items() if v and k[1] != "AF_UNIX" and
                                any(x["type"] == "SOCK_STREAM" and (x["status"], x["family"]) == k
                                    for x, _ in s["socket_connections"])}
    assert by(s, "socket_port_folded") == {(): float(len(size) - len(kept))}


@pytest.mark.root
def test_drops_counter_survives_a_listener_restart(netns: Netns, tmp_path: Path) -> None:
    proc = start_population(netns)
    assert proc.stdin is not None and proc.stdout is not None
    key = ("AF_INET", str(BACKLOG))

    def drops(ss: SsTcp) -> object:
        return ss.drops
    with running_exporter(netns, 9731, tmp_path / "stderr.log", "--config", str(views_config(tmp_path))) as exporter:
        def scrape() -> str:
            [(status, body)] = http(netns, 9731)
            assert status == 200, body
            return body
        while True:  # let SYN retransmits push the kernel's count past what a fresh listener starts at
            s1, ss1 = stable(netns, scrape, part=drops)  # the scrapes' own sockets move the rest
            if ss1.drops[(key[0], BACKLOG)] >= 12:
                break
        before = listener_figures(s1)[2][key]
        assert before == ss1.drops[(key[0], BACKLOG)]
        proc.stdin.write("reopen\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "reopened"
        s2, ss2 = stable(netns, scrape, part=drops)
        kernel_now = ss2.drops[(key[0], BACKLOG)]
        after = listener_figures(s2)[2][key]
        assert after == before + kernel_now  # the new listener's drops on top; never a decrease
        assert kernel_now < before, f"kernel count {kernel_now} did not drop below {before}: proves nothing"
        cfg = views_config(tmp_path)  # a changed config: the reload builds a new pipeline, the counter goes on
        cfg.write_text(cfg.read_text().replace("top: 3", "top: 4"))
        exporter.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "config reloaded" not in (tmp_path / "stderr.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        s3, ss3 = stable(netns, scrape, part=drops)
        assert listener_figures(s3)[2][key] == after + ss3.drops[(key[0], BACKLOG)] - kernel_now


@pytest.mark.root
def test_proc_fallback_reports_queue_length_and_names_what_is_missing(ports_ns: Netns, tmp_path: Path) -> None:
    cfg = views_config(tmp_path)
    argv = [*ports_ns.prefix, sys.executable, "-m", "exporter", "--once", "--source", "proc", "--config", str(cfg)]
    runs: list[subprocess.CompletedProcess[str]] = []

    def once() -> str:
        runs.append(subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT))
        assert runs[-1].returncode == 0, runs[-1].stderr
        return runs[-1].stdout

    s, ss = stable(ports_ns, once)
    length, limit, drops = listener_figures(s)
    assert length == keyed(ss.listeners()[0])
    assert limit == {} and drops == {}
    unavailable = set(by(s, "socket_metric_unavailable", "metric", "table", "reason"))
    assert unavailable == {(m, t, "proc") for m in ("socket_listen_queue_limit", "socket_listen_drops_total")
                           for t in ("tcp", "tcp6")}
    assert "socket_listen_drops_total unavailable for tcp" in runs[-1].stderr
    conns, rx, tx = ss.ports()  # /proc gives ports and queues as netlink does
    assert by(s, *CONN) == floats(conns)
    assert by(s, *RX) == floats(rx) and by(s, *TX) == floats(tx)


@pytest.mark.root
def test_views_are_off_by_default(ports_ns: Netns) -> None:
    s = samples(run_once(ports_ns))
    assert not [name for name in s if name.startswith(("socket_listen", "socket_port", "socket_ephemeral"))]
