"""``network_namespaces: all`` end to end: the real exporter in the root namespace, real pods around it.

Three namespaces, each holding the socket population (every TCP state, UDP, UNIX), whose processes
sit in real cgroups shaped like kubelet's and Docker's: a v1 cgroupfs burstable pod (with a
``/var/log/pods`` directory naming it), a v2 systemd besteffort pod (containerd), and a plain Docker
container (v2 systemd). Expectations come from ``ss`` and psutil run inside each namespace and from
the cgroup paths made here, never from the exporter's code.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import reference
from tests._require import require, require_netns
from tests.every_netns import (
    exporter_all,
    gauge,
    identities,
    listening_in_root,
    netns_inode,
    per_namespace,
    thread_namespaces,
)
from tests.exposition import connection_counts, owner_counts
from tests.kubelet_cgroups import fake_cgroup, new_ids, usable
from tests.netns import Netns
from tests.population import HIDDEN_FROM_SS, Population, socket_population
from tests.test_end_to_end import psutil_as_owner_counts, stable

pytestmark = pytest.mark.root
LAYOUTS = ("v1-cgroupfs", "v2-systemd", "v2-docker")


@dataclass
class Pod:
    pop: Population
    inode: str
    identity: tuple[str, str, str, str]  # pod_uid, pod_namespace, pod_name, container_id


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Pod], Path]]:
    require_netns()
    for layout in LAYOUTS:
        require(usable(layout), f"needs a writable cgroup hierarchy for {layout}")
    logs = tmp_path_factory.mktemp("pods")
    out: list[Pod] = []
    with ExitStack() as stack:
        for layout in LAYOUTS:
            ns = stack.enter_context(Netns())
            pop = stack.enter_context(socket_population(ns, 1))
            uid, cid = new_ids()
            path = stack.enter_context(fake_cgroup(layout, uid, cid, ns.pids()))
            with open(f"/proc/{min(ns.pids())}/cgroup") as f:
                assert path in f.read()  # the process really is in the cgroup we made
            if layout == "v1-cgroupfs":
                (logs / f"team-a_web-{layout}_{uid}").mkdir()
                ident = (uid, "team-a", f"web-{layout}", "")
            elif layout == "v2-docker":
                ident = ("", "", "", cid)
            else:
                ident = (uid, "", "", "")
            out.append(Pod(pop, str(netns_inode(ns.name)), ident))
        yield out, logs


def test_each_namespace_equals_ss_inside_it(pods: tuple[list[Pod], Path], tmp_path: Path) -> None:
    pod_list, logs = pods
    with exporter_all(tmp_path, "--path.pod-logs", str(logs)) as (client, _):
        for pod in pod_list:
            ss, text = stable(lambda p=pod: reference.ss_counts(p.pop.ns),  # type: ignore[misc]
                              lambda: client.get()[1])
            expected = Counter(ss)
            expected.update(dict.fromkeys(HIDDEN_FROM_SS, 1))  # netlink sees bound-only sockets
            assert per_namespace(text)[pod.inode] == expected, pod.identity
            assert identities(text)[pod.inode] == {pod.identity}


def test_namespaces_sum_to_the_totals_and_every_one_is_read(pods: tuple[list[Pod], Path], tmp_path: Path) -> None:
    pod_list, logs = pods
    with exporter_all(tmp_path, "--path.pod-logs", str(logs)) as (client, _):
        text = client.get()[1]
    summed: Counter[reference.SsKey] = Counter()
    for counts in per_namespace(text).values():
        summed += counts
    assert summed == connection_counts(text)
    own = str(os.stat("/proc/self/ns/net").st_ino)
    assert identities(text)[own] == {("", "", "", "")}  # the host: empty identity
    assert gauge(text, "socket_scrape_collector_success", collector="namespaces") == 1
    assert gauge(text, "socket_namespaces", result="failed") == gauge(text, "socket_namespaces", result="denied") == 0
    assert gauge(text, "socket_namespaces", result="netlink") >= len(pod_list) + 1


def test_processes_of_every_namespace_equal_psutil(pods: tuple[list[Pod], Path], tmp_path: Path) -> None:
    pod_list, logs = pods
    config = tmp_path / "owners.yml"  # every owner its own series: the host may hold many (shared machine)
    config.write_text("per_process: {max_owners: 100000}\n")
    with exporter_all(tmp_path, "--path.pod-logs", str(logs), "--config", str(config)) as (client, _):
        for pod in pod_list:
            ps, text = stable(lambda p=pod: reference.psutil_counts(p.pop.ns, "all"),  # type: ignore[misc]
                              lambda: client.get()[1])
            expected = psutil_as_owner_counts(pod.pop, ps)
            expected += Counter({(*key, str(pod.pop.pids["sockpop-tcp"])): 1 for key in HIDDEN_FROM_SS})
            pids = {str(p) for p in pod.pop.pids.values()}
            got = Counter({k: n for k, n in owner_counts(text).items() if k[3] in pids})
            assert got == Counter({k: n for k, n in expected.items() if k[3] in pids})


def test_without_cap_sys_admin_proc_is_used_and_said(pods: tuple[list[Pod], Path], tmp_path: Path) -> None:
    """setns refused: each pod is read through /proc/PID/net of a process inside, exactly; a named
    namespace with no process in it cannot be read at all: denied, and the stage says so."""
    pod_list, logs = pods
    drop = ["setpriv", "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin"]
    with Netns() as empty, exporter_all(tmp_path, "--path.pod-logs", str(logs), wrapper=drop) as (client, _):
        for pod in pod_list:
            ss, text = stable(lambda p=pod: reference.ss_counts(p.pop.ns),  # type: ignore[misc]
                              lambda: client.get()[1])
            assert per_namespace(text)[pod.inode] == ss  # /proc/PID/net has no bound-only sockets
            assert identities(text)[pod.inode] == {pod.identity}
        assert str(netns_inode(empty.name)) not in per_namespace(text)
    assert gauge(text, "socket_namespaces", result="proc") >= len(pod_list)
    assert gauge(text, "socket_namespaces", result="denied") >= 1
    assert gauge(text, "socket_scrape_collector_success", collector="namespaces") == 0


def test_failed_dumps_leave_every_thread_and_the_listener_at_home(pods: tuple[list[Pod], Path],
                                                                   tmp_path: Path) -> None:
    """Every dump fails after setns (seccomp refuses netlink sockets, source netlink: no fallback), yet
    the exporter keeps serving from the root namespace, and every one of its threads is there."""
    pod_list, logs = pods
    root = os.stat("/proc/self/ns/net").st_ino
    wrapper = [sys.executable, str(Path(__file__).parent / "no_netlink.py")]
    with exporter_all(tmp_path, "--source", "netlink", wrapper=wrapper) as (client, pid):
        for _ in range(3):
            text = client.get()[1]
            assert gauge(text, "socket_namespaces", result="failed") >= len(pod_list)
            assert gauge(text, "socket_scrape_collector_success", collector="namespaces") == 0
            assert not {p.inode for p in pod_list} & set(per_namespace(text))  # failed: no series
        threads = thread_namespaces(pid)
        assert len(threads) >= 3 and set(threads.values()) == {root}, threads
        assert listening_in_root(client.port)
    with exporter_all(tmp_path, "--path.pod-logs", str(logs)) as (client, pid):
        client.get()
        assert set(thread_namespaces(pid).values()) == {root}
        assert listening_in_root(client.port)

