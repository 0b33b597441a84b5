"""Namespaces created and deleted between and during scrapes: no failed scrape, no stale series.

A churn thread keeps making short-lived "pods" (a namespace, a process holding a listener and a few
connections, a kubelet-shaped cgroup with a fresh pod uid) and deleting them, some while a scrape
runs, while the real exporter in the root namespace is scraped over and over. Every scrape must
answer with the ``namespaces`` stage successful and nothing counted as failed or denied; once the
churn stops, no series may carry a deleted pod's uid.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from tests._require import require, require_netns
from tests.every_netns import exporter_all, gauge, identities
from tests.kubelet_cgroups import fake_cgroup, new_ids, usable
from tests.netns import Netns

pytestmark = pytest.mark.root
HOLDER = """
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 7000)); s.listen()
c = [socket.create_connection(("127.0.0.1", 7000)) for _ in range(5)]
print("ready", flush=True); time.sleep(60)
"""


def churn(stop: threading.Event, made: list[str], errors: list[BaseException]) -> None:
    try:
        while not stop.is_set():
            with Netns() as ns:
                proc = ns.popen([sys.executable, "-c", HOLDER], stdout=-1, text=True)
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
                uid, cid = new_ids()
                with fake_cgroup("v2-systemd", uid, cid, ns.pids()):
                    made.append(uid)
                    time.sleep((0.0, 0.3, 2.0)[len(made) % 3])  # some die mid-scrape, some are seen
    except BaseException as exc:  # reported by the test
        errors.append(exc)


def test_churn_never_fails_a_scrape_nor_leaves_series(tmp_path: Path) -> None:
    require_netns()
    require(usable("v2-systemd"), "needs a writable cgroup v2 hierarchy")
    stop, made, errors = threading.Event(), list[str](), list[BaseException]()
    with exporter_all(tmp_path) as (client, _):
        thread = threading.Thread(target=churn, args=(stop, made, errors), daemon=True)
        thread.start()
        seen_pods, deadline = set(), time.monotonic() + 90
        try:
            scrapes = 0
            while (scrapes < 40 or len(made) < 8 or not seen_pods & set(made)) and time.monotonic() < deadline \
                    and not errors:
                status, text, _ = client.get()
                assert status == 200
                logs = "".join(p.read_text() for p in tmp_path.glob("exporter-*.log"))
                assert gauge(text, "socket_scrape_collector_success", collector="namespaces") == 1, logs[-3000:]
                assert gauge(text, "socket_namespaces", result="failed") == 0
                assert gauge(text, "socket_namespaces", result="denied") == 0
                seen_pods |= {ident[0] for idents in identities(text).values() for ident in idents}
                scrapes += 1
        finally:
            stop.set()
            thread.join(60)
        assert not errors, errors
        assert len(made) >= 8 and seen_pods & set(made), (len(made), scrapes)
        text = client.get()[1]
        left = {ident[0] for idents in identities(text).values() for ident in idents}
        assert not left & set(made), left & set(made)
