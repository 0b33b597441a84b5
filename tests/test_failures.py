"""Failures are never successes: a stage that could not do its job says success=0 and its series are absent.

Real exporter runs (``python -m exporter --once``) in a namespace of the test's own: over an empty
directory standing in for an unmounted ``--path.procfs``, a missing path, a filesystem that is not a
procfs, the host's procfs seen from a child pid namespace (a container: our pid differs there), and
with netlink refused by the seccomp filter of tests/no_netlink.py. The one input no kernel here can
produce, a TCP state number from a future kernel, is a recorded dump with one state byte changed,
handed to the real source at the recv() boundary as tests/test_netlink_source.py does.

A process may also name itself like an owner bucket, ``(unowned)`` or ``(other)``; its sockets must
not be counted as that bucket's (real processes set their comm through /proc/self/comm).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.exposition import health as self_metrics
from exporter.exposition.sockets import SocketMetricsCollector
from exporter.model.table import SourceError, Table
from exporter.pipeline.state import ExporterState
from exporter.settings.config import Config
from exporter.sources import netlink as netlink_source
from tests._golden import PROCFS_FIXTURES
from tests._require import require_tool, unmet
from tests.exposition import samples
from tests.netns import Netns
from tests.test_fallback import NO_NETLINK, require_seccomp_arch
from tests.test_labels import _HOLDER

ROOT = Path(__file__).resolve().parent.parent
RECORDED_TCP4 = ROOT / "tests/fixtures/netlink/tcp4.bin"
OWNER_FAMILIES = ("socket_process_connections", "socket_unowned_sockets", "socket_process_owners_folded",
                  "socket_owner_scan_processes")
Samples = dict[str, list[tuple[dict[str, str], float]]]


EXPORTER = (sys.executable, "-m", "exporter")


def once(ns: Netns, *argv: str, prefix: tuple[str, ...] = EXPORTER) -> tuple[int, Samples, str]:
    """(exit code, samples, stderr) of ``--once`` run inside ``ns``; ``prefix`` wraps the exporter."""
    proc = ns.run([*prefix, "--once", *argv], check=False, timeout=120, cwd=ROOT)
    return proc.returncode, samples(proc.stdout), proc.stderr


def success(got: Samples) -> dict[str, float]:
    return {labels["collector"]: value for labels, value in got["socket_scrape_collector_success"]}


def listen_count(got: Samples) -> float:
    return sum(v for labels, v in got.get("socket_connections", []) if labels["status"] == "LISTEN")


def hold(ns: Netns, comm: str) -> subprocess.Popen[str]:
    """A real process in ``ns`` named ``comm`` (it writes /proc/self/comm) holding one TCP listener."""
    proc = ns.popen([sys.executable, "-c", _HOLDER, comm.encode().hex()], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip().isdigit()
    return proc


@pytest.fixture
def holder_ns(netns: Netns) -> Iterator[tuple[Netns, int]]:
    """A namespace holding one LISTEN socket, so the owner scan has an inode to look for."""
    yield netns, hold(netns, "holder").pid


@pytest.mark.parametrize("procfs", ["empty", "missing", "/sys"])
def test_procfs_showing_no_process_fails_the_owner_stage(holder_ns: tuple[Netns, int], tmp_path: Path,
                                                         procfs: str) -> None:
    """An unmounted /host/proc is an empty directory: the scan finds nobody, which must not read as
    "every socket unowned" with success=1 (the old behaviour)."""
    ns, _ = holder_ns
    path = {"empty": tmp_path / "proc", "missing": tmp_path / "absent"}.get(procfs, Path(procfs))
    if procfs == "empty":
        path.mkdir()
    code, got, stderr = once(ns, "--source", "netlink", "--path.procfs", str(path))
    assert code == 0 and listen_count(got) == 1  # the totals stand: netlink served them
    assert success(got) == {"netlink": 1.0, "owners": 0.0}
    assert [name for name in OWNER_FAMILIES if name in got] == []
    assert f"owner scan of {path} failed" in stderr


def test_owner_stage_fails_even_when_no_socket_needs_an_owner(netns: Netns, tmp_path: Path) -> None:
    """No socket with an inode (an empty namespace, kinds udp4): the scan has nothing to look for,
    so only the procfs check can tell that the owner data would have been worthless."""
    config = tmp_path / "udp4.yml"
    config.write_text("kinds: [udp4]\nsource: netlink\n")
    code, got, _ = once(netns, "--config", str(config), "--path.procfs", str(tmp_path / "absent"))
    assert code == 0 and success(got) == {"netlink": 1.0, "owners": 0.0}
    assert [name for name in OWNER_FAMILIES if name in got] == []
    code, got, _ = once(netns, "--config", str(config))  # the control: the real /proc
    assert success(got) == {"netlink": 1.0, "owners": 1.0} and got["socket_unowned_sockets"]


def test_host_procfs_seen_from_a_child_pid_namespace_finds_us_and_the_owners(holder_ns: tuple[Netns, int],
                                                                            tmp_path: Path) -> None:
    """A container with ``--path.procfs=/host/proc``: the exporter is pid 1 in its own pid namespace
    and another pid in the host's procfs, where its ``self`` still resolves. Owners are found under
    their host pids; ``process_*`` describe the exporter from its own /proc."""
    require_tool("unshare")
    ns, holder = holder_ns
    host_proc = tmp_path / "host_proc"
    host_proc.mkdir()
    script = ('mount --bind /proc "$1" && mount -t proc proc /proc && [ "$$" = 1 ] && '
              'exec "$2" -m exporter --once --source netlink --path.procfs "$1"')
    proc = ns.run(["unshare", "--pid", "--fork", "--mount", "--propagation", "private",
                   "sh", "-c", script, "sh", str(host_proc), sys.executable], check=False, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    got = samples(proc.stdout)
    assert success(got) == {"netlink": 1.0, "owners": 1.0}
    owners = {labels["pid"] for labels, v in got["socket_process_connections"] if labels["status"] == "LISTEN" and v}
    assert owners == {str(holder)}
    assert got["process_start_time_seconds"][0][1] > 0


def test_netlink_refused_and_proc_fallback_failing_fails_both(netns: Netns, tmp_path: Path) -> None:
    """``auto`` with netlink refused and /proc/net missing: nothing served any table. Both stages
    fail (old: netlink=1, socket_netlink_fallback=0); the fallback was attempted, so it says 1."""
    require_seccomp_arch()
    empty = tmp_path / "proc"
    empty.mkdir()
    refused = tuple(NO_NETLINK)
    code, got, stderr = once(netns, "--source", "auto", "--path.procfs", str(empty), prefix=refused)
    assert code == 1, stderr
    assert success(got) == {"netlink": 0.0, "proc": 0.0, "owners": 0.0}
    assert "socket_connections" not in got and "socket_scrape_source" not in got
    assert got["socket_netlink_fallback"] == [({}, 1.0)]
    code, got, stderr = once(netns, "--source", "auto", prefix=refused)  # control: a fallback that works
    assert code == 0 and success(got) == {"netlink": 1.0, "proc": 1.0, "owners": 1.0}, stderr
    assert got["socket_netlink_fallback"] == [({}, 1.0)]


@pytest.fixture
def future_tcp_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """TCP4 dumps answer with a recorded dump whose first socket is in state 14 (no kernel has it yet);
    every other table is dumped from the kernel for real."""
    try:
        netlink_source._open(Table.UDP4).close()
    except SourceError as exc:
        unmet(f"no netlink sock_diag socket here: {exc}")
    blob = bytearray(RECORDED_TCP4.read_bytes())
    assert blob[17] == 10  # idiag_state of the first message (netlink_wire.py): LISTEN
    blob[17] = 14
    real = netlink_source._chunks

    def chunks(sock: socket.socket, table: Table) -> Iterator[memoryview]:
        if table is Table.TCP4:
            yield memoryview(bytes(blob))
        else:
            yield from real(sock, table)

    monkeypatch.setattr(netlink_source, "_chunks", chunks)


@pytest.mark.usefixtures("future_tcp_state")
def test_unknown_tcp_state_fails_that_table_not_the_scrape(caplog: pytest.LogCaptureFixture) -> None:
    state = ExporterState.build(Config(kinds=("tcp4", "udp4", "unix"), source="netlink"))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SocketMetricsCollector(lambda: state))
    got = samples(generate_latest(self_metrics.register(registry)).decode())  # old: ValueError from here
    assert success(got) == {"netlink": 0.0, "owners": 1.0}
    assert {labels["table"] for labels, _ in got["socket_scrape_source"]} == {"udp", "unix"}
    assert {labels["family"] for labels, _ in got["socket_connections"]} == {"AF_INET", "AF_UNIX"}
    assert {labels["type"] for labels, _ in got["socket_connections"] if labels["family"] == "AF_INET"} == {
        "SOCK_DGRAM"}
    assert any("unknown TCP state 14" in r.getMessage() for r in caplog.records)


def test_unknown_tcp_state_in_proc_net_fails_that_table(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    shutil.copytree(PROCFS_FIXTURES / "basic", root, symlinks=True)
    tcp = (root / "net/tcp").read_text().splitlines()
    fields = tcp[1].split(" ")
    fields[fields.index("0A")] = "0E"  # the first socket, a LISTEN, in a state no kernel has yet
    (root / "net/tcp").write_text("\n".join([tcp[0], " ".join(fields), *tcp[2:]]) + "\n")
    proc = subprocess.run([sys.executable, "-m", "exporter", "--once", "--source", "proc", "--path.procfs",
                           str(root)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    got = samples(proc.stdout)
    assert proc.returncode == 0 and success(got)["proc"] == 0.0
    assert {labels["table"] for labels, _ in got["socket_scrape_source"]} == {"tcp6", "udp", "udp6", "unix"}
    assert "unknown TCP state 0x0e" in proc.stderr


def _listen_by_process(got: Samples) -> Counter[str]:
    rows = got["socket_process_connections"]
    return Counter({labels["process"]: int(v) for labels, v in rows if labels["status"] == "LISTEN" and v})


def test_process_named_like_a_bucket_keeps_its_own_series(netns: Netns, tmp_path: Path) -> None:
    """Real processes name themselves "(unowned)" and "(other)" (two of each, one listener each) and
    one "small" owner is folded by max_owners 2. With the ``process`` label alone the named ones
    once merged into the buckets ((unowned) 2, (other) 3); now they keep a series, one more pair of
    parentheses around their name, and the buckets hold only what they say."""
    holders = [hold(netns, name) for name in ("(unowned)", "(unowned)", "(other)", "(other)", "small")]
    config = tmp_path / "process.yml"
    config.write_text("kinds: [tcp4]\nsource: netlink\nper_process: {labels: [process], max_owners: 2}\n")
    code, got, stderr = once(netns, "--config", str(config))
    assert code == 0, stderr
    assert _listen_by_process(got) == Counter({"((unowned))": 2, "((other))": 2, "(other)": 1})
    assert got["socket_process_owners_folded"] == [({}, 1.0)]
    _, got, _ = once(netns, "--source", "netlink")  # labels [pid, process]: the same names, by pid
    named = {labels["pid"]: labels["process"] for labels, v in got["socket_process_connections"] if v}
    assert {named[str(h.pid)] for h in holders} == {"((unowned))", "((other))", "small"}
