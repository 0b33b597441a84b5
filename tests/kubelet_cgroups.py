"""Fake pods and containers: real cgroups in the shapes kubelet and container runtimes make.

``with fake_cgroup("v1-cgroupfs", uid, cid, pids) as path:`` creates the directories under a real
cgroup hierarchy, writes each pid to ``cgroup.procs`` (so ``/proc/PID/cgroup`` shows ``path``, as it
would on a node) and, on exit, moves the survivors back to the hierarchy's root and removes only the
directories it created, deepest first. Never the ``memory`` controller: the v1 layouts use ``pids``
and the named ``systemd`` hierarchy, the v2 ones the unified hierarchy.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator, Sequence

V1_PIDS, V1_SYSTEMD, V2 = "/sys/fs/cgroup/pids", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"


def layout_path(layout: str, uid: str, cid: str) -> tuple[str, str]:
    """(hierarchy mount, cgroup path as /proc/PID/cgroup prints it) for ``layout``."""
    u_ = uid.replace("-", "_")
    return {
        "v1-cgroupfs": (V1_PIDS, f"/kubepods/burstable/pod{uid}/{cid}"),
        "v1-cgroupfs-guaranteed": (V1_PIDS, f"/kubepods/pod{uid}/{cid}"),
        "v1-systemd-crio": (V1_SYSTEMD, f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u_}.slice/"
                                        f"crio-{cid}.scope"),
        "v2-systemd": (V2, f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u_}.slice/"
                           f"cri-containerd-{cid}.scope"),
        "v2-docker": (V2, f"/system.slice/docker-{cid}.scope"),
    }[layout]


def new_ids() -> tuple[str, str]:
    """A fresh pod uid (as the API writes it) and a 64-hex container id."""
    return str(uuid.uuid4()), uuid.uuid4().hex + uuid.uuid4().hex


def usable(layout: str) -> bool:
    root, _ = layout_path(layout, "0", "0")
    return os.access(f"{root}/cgroup.procs", os.W_OK)


@contextlib.contextmanager
def fake_cgroup(layout: str, uid: str, cid: str, pids: Sequence[int]) -> Iterator[str]:
    root, path = layout_path(layout, uid, cid)
    made: list[str] = []
    try:
        current = root
        for part in path.strip("/").split("/"):
            current = f"{current}/{part}"
            if not os.path.isdir(current):
                os.mkdir(current)
                made.append(current)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError), open(f"{current}/cgroup.procs", "w") as f:
                f.write(str(pid))
        yield path
    finally:
        for directory in reversed(made):
            _evacuate(directory, root)
            for _ in range(100):  # a just-killed process leaves its cgroup when reaped
                try:
                    os.rmdir(directory)
                    break
                except OSError:
                    time.sleep(0.05)
                    _evacuate(directory, root)


def _evacuate(directory: str, root: str) -> None:
    with contextlib.suppress(OSError):
        with open(f"{directory}/cgroup.procs") as f:
            pids = f.read().split()
        for pid in pids:
            with contextlib.suppress(OSError), open(f"{root}/cgroup.procs", "w") as f:
                f.write(pid)
