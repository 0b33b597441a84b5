"""The test socket population really contains what it promises, and the references agree.

ss vs psutil, per (family, type, status), for the default population: identical. Differences exist
only for cases the population avoids unless asked (``shared_unix=True``), documented in reference.py:
a UNIX socket with two fds in one process is listed twice by psutil; a socket shared by two processes
is listed once, attributed to the HIGHEST pid (psutil ``dict.update``s its inode map in pid order).
Bound-only TCP (CLOSE) is in neither; only a sock_diag dump asking for BOUND_INACTIVE returns it.
fd-less UNIX sockets (unaccepted, in flight) also differ; the population has none (reference.py).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from dataclasses import dataclass

import pytest

from tests import reference
from tests._require import require_netns, require_root, require_tool
from tests.netns import Netns
from tests.population import FAMILIES, HIDDEN_FROM_SS, PROMISED_TCP_STATES, Population, socket_population
from tests.reference import PsKey, SsKey


@dataclass
class Snapshot:
    pop: Population
    ss: Counter[SsKey]
    ps: Counter[PsKey]
    netlink: Counter[SsKey]


@pytest.fixture(scope="module")
def snap(population: Population) -> Snapshot:
    """ss, psutil and netlink counts taken back to back, once per module."""
    ns = population.ns
    return Snapshot(
        population, reference.ss_counts(ns), reference.psutil_counts(ns), reference.netlink_tcp_counts(ns)
    )


@pytest.mark.root
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("status", PROMISED_TCP_STATES)
def test_every_tcp_state_is_in_ss(snap: Snapshot, family: str, status: str) -> None:
    assert snap.ss[family, "SOCK_STREAM", status] >= 1


@pytest.mark.root
def test_udp_and_unix_types_are_present(snap: Snapshot) -> None:
    for key in [(f, "SOCK_DGRAM", "NONE") for f in FAMILIES] + [
        ("AF_UNIX", t, "NONE") for t in ("SOCK_STREAM", "SOCK_DGRAM", "SOCK_SEQPACKET")
    ]:
        assert snap.ss[key] >= 1, key
        assert reference.without_pid(snap.ps)[key] == snap.ss[key], key


@pytest.mark.root
def test_ss_and_psutil_agree(snap: Snapshot) -> None:
    assert reference.without_pid(snap.ps) == snap.ss


@pytest.mark.root
def test_counts_made_are_what_ss_sees(snap: Snapshot) -> None:
    visible = Counter({k: n for k, n in snap.pop.counts_made.items() if k not in HIDDEN_FROM_SS})
    assert visible == snap.ss


@pytest.mark.root
def test_bound_only_tcp_is_visible_to_netlink_only(snap: Snapshot) -> None:
    for key in HIDDEN_FROM_SS:
        assert snap.pop.counts_made[key] == 1
        assert snap.netlink[key] == 1
        assert snap.ss[key] == 0
        assert reference.without_pid(snap.ps)[key] == 0
    tcp_ss = Counter({k: n for k, n in snap.ss.items() if k[1] == "SOCK_STREAM" and k[0] != "AF_UNIX"})
    assert snap.netlink - Counter(dict.fromkeys(HIDDEN_FROM_SS, 1)) == tcp_ss


@pytest.mark.root
def test_at_least_three_named_owner_processes(snap: Snapshot) -> None:
    owners = {pid for (_f, _t, _s, pid) in snap.ps if pid is not None}
    assert len(owners) >= 3
    for comm, pid in snap.pop.pids.items():
        with open(f"/proc/{pid}/comm") as f:
            assert f.read().strip() == comm
    assert owners <= set(snap.pop.pids.values())


@pytest.mark.root
def test_fd_less_sockets_have_no_pid(snap: Snapshot) -> None:
    """TIME_WAIT and SYN_RECV are not full sockets (no inode); the child queued on the full listen(0)
    socket has an inode but no fd yet. psutil reports all of them with pid None."""
    for family in FAMILIES:
        for status in ("TIME_WAIT", "SYN_RECV", "ESTABLISHED"):
            assert snap.ps[family, "SOCK_STREAM", status, None] == 1, (family, status)
    assert not [k for k in snap.ps if k[0] == "AF_UNIX" and k[3] is None]


@pytest.mark.root
def test_shared_listener_goes_to_the_highest_pid(snap: Snapshot) -> None:
    hub, kid = snap.pop.pids["sockpop-hub"], snap.pop.pids["sockpop-kid"]
    holder, other = max(hub, kid), min(hub, kid)
    kid_rows = Counter({k: n for k, n in snap.ps.items() if k[3] == kid})
    if holder == kid:
        assert kid_rows == Counter({("AF_INET", "SOCK_STREAM", "LISTEN", kid): 1})
    else:
        assert not kid_rows
    assert snap.ps["AF_INET", "SOCK_STREAM", "LISTEN", other] >= 1  # hub's own listeners


@pytest.mark.root
def test_psutil_kinds_are_slices_of_all(population: Population) -> None:
    kinds = reference.psutil_kind_counts(population.ns)
    tables = {
        "tcp4": [("AF_INET", "SOCK_STREAM")],
        "tcp6": [("AF_INET6", "SOCK_STREAM")],
        "udp4": [("AF_INET", "SOCK_DGRAM")],
        "udp6": [("AF_INET6", "SOCK_DGRAM")],
        "unix": [("AF_UNIX", t) for t in ("SOCK_STREAM", "SOCK_DGRAM", "SOCK_SEQPACKET")],
    }
    tables |= {
        "tcp": tables["tcp4"] + tables["tcp6"],
        "udp": tables["udp4"] + tables["udp6"],
        "inet4": tables["tcp4"] + tables["udp4"],
        "inet6": tables["tcp6"] + tables["udp6"],
    }
    tables["inet"] = tables["inet4"] + tables["inet6"]
    for kind, pairs in tables.items():
        want = Counter({k: n for k, n in kinds["all"].items() if k[:2] in pairs})
        assert kinds[kind] == want, kind
    assert sum(kinds["inet"].values()) + sum(kinds["unix"].values()) == sum(kinds["all"].values())


@pytest.mark.root
def test_shared_unix_differences(netns: Netns) -> None:
    """A fork-shared UNIX socket is listed once (under the highest pid); a dup'ed one twice."""
    with socket_population(netns, shared_unix=True) as pop:
        ss, ps = reference.ss_counts(netns), reference.psutil_counts(netns)
    key = ("AF_UNIX", "SOCK_DGRAM", "NONE")
    assert reference.without_pid(ps)[key] == ss[key] + 1
    assert {k: n for k, n in reference.without_pid(ps).items() if k != key} == {
        k: n for k, n in ss.items() if k != key
    }
    hub, kid = pop.pids["sockpop-hub"], pop.pids["sockpop-kid"]
    kid_rows = {k: n for k, n in ps.items() if k[3] == kid}
    shared = {("AF_INET", "SOCK_STREAM", "LISTEN", kid): 1, ("AF_UNIX", "SOCK_DGRAM", "NONE", kid): 1}
    assert kid_rows == (shared if kid > hub else {})
    assert ps["AF_UNIX", "SOCK_DGRAM", "NONE", pop.pids["sockpop-dgu"]] == 6 + 2  # dup: one row per fd


@pytest.mark.root
def test_scale_multiplies_the_scaled_sockets(netns: Netns, population: Population) -> None:
    with socket_population(netns, scale=3) as pop3:
        ss3 = reference.ss_counts(netns)
    ss1 = reference.ss_counts(population.ns)
    per_unit = Counter(
        {
            ("AF_UNIX", "SOCK_STREAM", "NONE"): 8,
            ("AF_UNIX", "SOCK_SEQPACKET", "NONE"): 8,
            ("AF_UNIX", "SOCK_DGRAM", "NONE"): 6,
        }
    )
    for f in FAMILIES:
        per_unit.update(
            {
                (f, "SOCK_DGRAM", "NONE"): 2,
                (f, "SOCK_STREAM", "ESTABLISHED"): 4,
                (f, "SOCK_STREAM", "LISTEN"): 1,
            }
        )
    diff = {k: ss3[k] - ss1[k] for k in ss3 | ss1 if ss3[k] != ss1[k]}
    assert diff == {k: 2 * n for k, n in per_unit.items()}
    assert pop3.setup_seconds < 10


@pytest.mark.root
def test_netns_cleans_up_processes_and_itself() -> None:
    require_netns()
    with pytest.raises(RuntimeError, match="boom"), Netns() as ns:
        # sh forks a grandchild we never see as a Popen: it must die too.
        ns.popen(["sh", "-c", "sleep 300 & exec sleep 300"])
        deadline = time.monotonic() + 5
        while len(ns.pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        pids = ns.pids()
        assert len(pids) == 2
        raise RuntimeError("boom")
    assert ns.pids() == []
    for pid in pids:
        with pytest.raises(FileNotFoundError):
            open(f"/proc/{pid}/ns/net").close()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert ns.name not in listed


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [
        ("true", pytest.fail.Exception),
        ("TRUE", pytest.fail.Exception),
        ("", pytest.skip.Exception),
        ("false", pytest.skip.Exception),
    ],
)
def test_unmet_requirement_skips_locally_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(outcome, match="needs root"):
        require_root()
    with pytest.raises(outcome, match="no-such-tool"):
        require_tool("no-such-tool-sockexp")
