"""Helpers for the ``network_namespaces: all`` tests: the real exporter in the root namespace, and
its per-namespace exposition read back into Counters keyed like tests/reference.py."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests._http import Client, started_exporter
from tests.exposition import samples
from tests.reference import SsKey

IDENTITY = ("pod_uid", "pod_namespace", "pod_name", "container_id")


def netns_inode(name: str) -> int:
    """A named namespace's inode, as ``stat -L -c %i /run/netns/NAME`` prints it."""
    out = subprocess.run(["stat", "-L", "-c", "%i", f"/run/netns/{name}"], capture_output=True, text=True,
                         check=True).stdout
    return int(out)


def per_namespace(text: str) -> dict[str, Counter[SsKey]]:
    """socket_namespace_connections as {netns: Counter[(family, type, status)]}."""
    out: dict[str, Counter[SsKey]] = {}
    for labels, value in samples(text).get("socket_namespace_connections", []):
        out.setdefault(labels["netns"], Counter())[(labels["family"], labels["type"], labels["status"])] += int(value)
    return out


def identities(text: str) -> dict[str, set[tuple[str, ...]]]:
    """{netns: every distinct (pod_uid, pod_namespace, pod_name, container_id) its series carry}."""
    out: dict[str, set[tuple[str, ...]]] = {}
    for labels, _ in samples(text).get("socket_namespace_connections", []):
        out.setdefault(labels["netns"], set()).add(tuple(labels[k] for k in IDENTITY))
    return out


def gauge(text: str, name: str, **want: str) -> float:
    for labels, value in samples(text).get(name, []):
        if all(labels.get(k) == v for k, v in want.items()):
            return value
    raise AssertionError(f"{name}{want} not in the scrape")


@contextlib.contextmanager
def exporter_all(tmp: Path, *args: str, wrapper: Sequence[str] = ()) -> Iterator[tuple[Client, int]]:
    """``python -m exporter --network-namespaces all`` in the root namespace on 127.0.0.1:<free port>,
    reading the real /proc; yields a client and the exporter's pid. ``wrapper`` prefixes the argv."""
    with started_exporter(tmp, "--network-namespaces", "all", *args, wrapper=wrapper) as (port, pid):
        yield Client(port, timeout=60), pid


def thread_namespaces(pid: int) -> dict[str, int]:
    """{thread name: netns inode} for every thread of ``pid``."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f"{f.read().strip()}/{tid}"
            out[name] = os.stat(f"/proc/{pid}/task/{tid}/ns/net").st_ino
    return out


def listening_in_root(port: int) -> bool:
    """True if ``ss`` run in the root namespace shows a TCP listener on 127.0.0.1:``port``."""
    rows = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout.splitlines()
    return any(row.split()[3] == f"127.0.0.1:{port}" for row in rows)
