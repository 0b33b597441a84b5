"""The netlink source against the real kernel.

The namespace test needs root (``ip netns``): it builds every TCP state (tests/tcp_states.py), UDP and
UNIX sockets in two processes, then compares ``read_tables`` run INSIDE the namespace with ``ss``
there. The one expected difference is the bound-only TCP sockets: we ask for TCP_BOUND_INACTIVE
(bit 13) and get them as CLOSE; ss 6.1's mask stops at bit 11. The other tests dump the test
process's own namespace, which any user may do, and provoke kernel errors with bad requests.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.exposition import health as self_metrics
from exporter.exposition.sockets import SocketMetricsCollector
from exporter.model.table import SourceUnavailable, Table, status_name
from exporter.pipeline.state import ExporterState
from exporter.settings.config import Config, PerProcessConfig
from exporter.sources import netlink as netlink_source
from exporter.sources.netlink import ALL_STATES, diag_request, read_tables
from exporter.sources.netlink_wire import NetlinkDumpError, NetlinkDumpInterrupted, decode_inet_dump, decode_unix_dump
from tests._require import unmet
from tests.exposition import samples
from tests.netlink_reference import decode_with_pyroute2, record_dump
from tests.netns import Netns

ROOT = Path(__file__).resolve().parent.parent
Key = tuple[str, str, int]
SS_STATE = {
    "ESTAB": 1, "SYN-SENT": 2, "SYN-RECV": 3, "FIN-WAIT-1": 4, "FIN-WAIT-2": 5, "TIME-WAIT": 6,
    "UNCONN": 7, "CLOSE-WAIT": 8, "LAST-ACK": 9, "LISTEN": 10, "CLOSING": 11,
}  # fmt: skip
SS_UNIX_TYPE = {"u_str": "SOCK_STREAM", "u_dgr": "SOCK_DGRAM", "u_seq": "SOCK_SEQPACKET"}
SS_ARGS = {"TCP4": "-ta4", "TCP6": "-ta6", "UDP4": "-ua4", "UDP6": "-ua6", "UNIX": "-xa"}

# Runs inside the namespace: argv[1] is the repo root. Prints one JSON line.
_IN_NETNS = r"""
import json, os, signal, socket, subprocess, sys
sys.path[:0] = [sys.argv[1], os.path.join(sys.argv[1], "tests")]
import tcp_states
from exporter.sources.netlink import read_tables
from exporter.model.table import Table
keep, made = [], {}
for fam, name in ((socket.AF_INET, "TCP4"), (socket.AF_INET6, "TCP6")):
    socks, made[name] = tcp_states.build_tcp_states(fam)
    keep += socks
r, w = os.pipe()
kid = os.fork()
if kid == 0:  # a second process: UDP bound + connected per family, UNIX of every type
    for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        for _ in range(3):
            s = socket.socket(fam, socket.SOCK_DGRAM); s.bind((host, 0))
            c = socket.socket(fam, socket.SOCK_DGRAM); c.connect(s.getsockname()[:2]); keep += [s, c]
    for typ in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET):
        keep += [*socket.socketpair(socket.AF_UNIX, typ), socket.socket(socket.AF_UNIX, typ)]
        if typ != socket.SOCK_DGRAM:
            lsock = socket.socket(socket.AF_UNIX, typ); lsock.bind(f"\0sockexp-{typ}"); lsock.listen()
            keep.append(lsock)
    os.write(w, b"k"); signal.pause()
os.read(r, 1)
tables = [[t.table.name, t.sock_type, list(t.states)] for t in read_tables(list(Table))]
from exporter.sources import netlink as netlink_source
by_bit = {}
for bit in (3, 7, 12, 13):  # which mask bits return which sockets (module docstring's table)
    netlink_source.ALL_STATES = 1 << bit
    netlink_source.diag_request.cache_clear()
    by_bit[bit] = sorted(s for t in read_tables([Table.TCP4, Table.TCP6]) for s in t.states)
ss = {a: subprocess.run(["ss", "-Hn", a], capture_output=True, text=True, check=True).stdout
      for a in sys.argv[2:]}
os.kill(kid, signal.SIGKILL)
print(json.dumps({"tables": tables, "ss": ss, "made": made, "by_bit": by_bit}))
"""


def _ss_counts(outputs: dict[str, str]) -> Counter[Key]:
    counts: Counter[Key] = Counter()
    for name, arg in SS_ARGS.items():
        for row in (line.split() for line in outputs[arg].splitlines() if line.strip()):
            if name == "UNIX":
                counts[name, SS_UNIX_TYPE[row[0]], SS_STATE[row[1]]] += 1
            else:
                counts[name, "SOCK_STREAM" if name.startswith("TCP") else "SOCK_DGRAM", SS_STATE[row[0]]] += 1
    return counts


def test_read_tables_in_netns_matches_ss(netns: Netns) -> None:
    """``netns`` (tests/conftest.py) skips without root/ip/ss, and fails so under CI=true."""
    out = json.loads(netns.run([sys.executable, "-c", _IN_NETNS, str(ROOT), *SS_ARGS.values()]).stdout)
    netlink: Counter[Key] = Counter()
    for name, sock_type, states in out["tables"]:
        for state in states:
            netlink[name, socket.SocketKind(sock_type).name, state] += 1
    ss = _ss_counts(out["ss"])
    bound_only = {("TCP4", "SOCK_STREAM", 7): 1, ("TCP6", "SOCK_STREAM", 7): 1}
    assert netlink - ss == bound_only, "only bound-only TCP sockets may differ from ss"
    assert ss - netlink == Counter()
    for name in ("TCP4", "TCP6"):  # the kernel's states are the ones tcp_states.py built
        statuses = Counter(
            status_name(Table[name], s) for (t, _, s), n in netlink.items() if t == name for _ in range(n)
        )
        assert statuses == Counter(out["made"][name]), name
    assert {t for t, _, _ in netlink} == {t.name for t in Table}
    # Bound-only: only bit 13 (TCP_BOUND_INACTIVE) returns them, as CLOSE (7). Request sockets:
    # bit 3 or bit 12 (NEW_SYN_RECV) returns them, as SYN_RECV (3). One of each per family.
    assert out["by_bit"] == {"3": [3, 3], "7": [], "12": [3, 3], "13": [7, 7]}
    assert netlink["UNIX", "SOCK_SEQPACKET", 10] == 1 and netlink["UDP6", "SOCK_DGRAM", 1] == 3


@pytest.fixture()
def netlink_here() -> None:
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4).close()  # NETLINK_SOCK_DIAG
    except OSError as exc:
        unmet(f"no netlink sock_diag socket here: {exc}")


def test_request_layout_is_the_uapi_one() -> None:
    """pyroute2's encoding == struct inet_diag_req_v2 / unix_diag_req packed by hand."""
    hdr = struct.Struct("=IHHII")
    inet = hdr.pack(72, 20, 0x301, 1, 0) + struct.pack(
        "=BBBxI", socket.AF_INET6, socket.IPPROTO_UDP, 0, ALL_STATES
    )
    assert diag_request(Table.UDP6) == inet + bytes(48)
    unix = hdr.pack(40, 20, 0x301, 1, 0) + struct.pack("=BBxxIIIQ", socket.AF_UNIX, 0, ALL_STATES, 0, 0, 0)
    assert diag_request(Table.UNIX) == unix


@pytest.mark.usefixtures("netlink_here")
def test_read_tables_shape_and_threads() -> None:
    """Every table in order (UNIX as three types); concurrent calls share nothing and leak no fd."""
    fds = len(os.listdir("/proc/self/fd"))
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: read_tables(list(Table)), range(32)))
    assert len(os.listdir("/proc/self/fd")) == fds
    for got in results:
        assert [(t.table, t.sock_type) for t in got] == [(t, k) for t in Table for k in t.sock_types]


@pytest.mark.usefixtures("netlink_here")
def test_record_dump_is_raw_and_complete() -> None:
    blob = record_dump(Table.UNIX)
    assert struct.unpack_from("=IHH", blob, len(blob) - 20) == (20, 3, 2)  # ends with NLMSG_DONE
    rows = decode_with_pyroute2(blob)
    assert sum(map(len, decode_unix_dump([blob]))) == len(rows)


@pytest.mark.usefixtures("netlink_here")
def test_missing_diag_module_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A protocol with no diag handler: the kernel answers NLMSG_DONE(-ENOENT)."""
    req = bytearray(diag_request(Table.TCP4))
    req[17] = 253  # sdiag_protocol: IPPROTO 253 is reserved for experiments, no inet_diag handler
    monkeypatch.setattr(netlink_source, "diag_request", lambda table: bytes(req))
    with pytest.raises(SourceUnavailable, match="TCP4") as info:
        read_tables([Table.TCP4])
    assert isinstance(info.value.__cause__, NetlinkDumpError) and info.value.__cause__.errno == 2


@pytest.mark.usefixtures("netlink_here")
def test_kernel_rejecting_the_request_is_a_dump_error(monkeypatch: pytest.MonkeyPatch) -> None:
    req = bytearray(diag_request(Table.TCP4))
    req[16] = 99  # sdiag_family beyond AF_MAX: NLMSG_ERROR(-EINVAL)
    monkeypatch.setattr(netlink_source, "diag_request", lambda table: bytes(req))
    with pytest.raises(NetlinkDumpError) as info:
        read_tables([Table.TCP4])
    assert info.value.errno == 22 and not isinstance(info.value, SourceUnavailable)


def test_refused_netlink_socket_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel refuses an unknown netlink protocol with EPROTONOSUPPORT, as a kernel without
    sock_diag would: that is a SourceUnavailable, so ``auto`` falls back to /proc."""
    monkeypatch.setattr(netlink_source, "NETLINK_SOCK_DIAG", 99)
    with pytest.raises(SourceUnavailable, match="UDP4"):
        read_tables([Table.UDP4])


def _serve_dumps(monkeypatch: pytest.MonkeyPatch, dumps: list[bytes]) -> list[int]:
    """Answer successive dumps with ``dumps`` (the last one repeats) instead of the kernel's replies.

    Why bytes at the recv boundary: sock_diag does not set NLM_F_DUMP_INTR on demand, so the one
    thing faked is what recv() returned; the retry, flag handling and decoding under test are real.
    """
    served: list[int] = []

    def chunks(sock: socket.socket, table: Table) -> Iterator[memoryview]:
        blob = dumps[min(len(served), len(dumps) - 1)]
        served.append(len(blob))
        yield from (memoryview(blob[i : i + 4096]) for i in range(0, len(blob), 4096))

    monkeypatch.setattr(netlink_source, "_chunks", chunks)
    return served


def _interrupted(blob: bytes) -> bytes:
    """``blob`` with NLM_F_DUMP_INTR set on every message, as a dump the kernel flagged."""
    out, off = bytearray(blob), 0
    while off < len(out):
        length, flags = struct.unpack_from("=I", out, off)[0], struct.unpack_from("=H", out, off + 6)[0]
        struct.pack_into("=H", out, off + 6, flags | 0x10)
        off += (length + 3) & ~3
    return bytes(out)


RECORDED_TCP4 = ROOT / "tests/fixtures/netlink/tcp4.bin"


def interrupted_counts(table: str = "tcp") -> tuple[float, float]:
    """(retried, published interrupted) for ``table``, read the way a scrape reads them: through a registry."""
    registry = self_metrics.register(CollectorRegistry(auto_describe=False))
    retried, interrupted = (registry.get_sample_value(f"socket_netlink_dump_{name}_total", {"table": table}) or 0.0
                            for name in ("retries", "interrupted"))
    return retried, interrupted


@pytest.mark.usefixtures("netlink_here")
def test_interrupted_dump_is_retried_and_a_clean_retry_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    clean = RECORDED_TCP4.read_bytes()
    served = _serve_dumps(monkeypatch, [_interrupted(clean)] * netlink_source.INTERRUPTED_RETRIES + [clean])
    retried, published = interrupted_counts()
    got = read_tables([Table.TCP4])
    assert len(served) == netlink_source.INTERRUPTED_RETRIES + 1
    assert got[0].states == decode_inet_dump([clean], Table.TCP4).states
    after = interrupted_counts()
    assert after[0] - retried == netlink_source.INTERRUPTED_RETRIES
    assert after[1] == published  # nothing published interrupted


@pytest.mark.usefixtures("netlink_here")
def test_dump_interrupted_every_time_is_published_and_counted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean = RECORDED_TCP4.read_bytes()
    served = _serve_dumps(monkeypatch, [_interrupted(clean)])
    before = interrupted_counts()
    got = read_tables([Table.TCP4])
    want = decode_inet_dump([clean], Table.TCP4)
    assert (got[0].states, got[0].inodes) == (want.states, want.inodes) and len(want) > 0
    assert len(served) == netlink_source.INTERRUPTED_RETRIES + 1
    after = interrupted_counts()
    assert after[0] - before[0] == netlink_source.INTERRUPTED_RETRIES
    assert after[1] - before[1] == 1
    assert [r.levelname for r in caplog.records] == ["WARNING"] and "TCP4" in caplog.records[0].getMessage()
    # a scrape over such dumps succeeds and exposes the count (this scrape's dump included)
    state = ExporterState.build(Config(kinds=("tcp4",), per_process=PerProcessConfig(enabled=False)))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SocketMetricsCollector(lambda: state))
    got = samples(generate_latest(self_metrics.register(registry)).decode())
    assert ({"table": "tcp"}, after[1] + 1) in got["socket_netlink_dump_interrupted_total"]
    assert "socket_netlink_dump_interrupted_created" not in got  # no _created series (exposition/process.py)
    assert got["socket_scrape_collector_success"] == [({"collector": "netlink"}, 1.0)]


@pytest.mark.usefixtures("netlink_here")
def test_interrupted_and_malformed_last_dump_is_still_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accepting an interrupted dump must not accept a broken one: bad lengths still raise."""
    blob = _interrupted(RECORDED_TCP4.read_bytes())
    _serve_dumps(monkeypatch, [blob[: len(blob) // 2 + 7]])
    with pytest.raises(NetlinkDumpError) as info:
        read_tables([Table.TCP4])
    assert not isinstance(info.value, NetlinkDumpInterrupted)
