"""Who lives in a network namespace, from ``/proc/PID/cgroup`` alone: pod UID or container id.

Pure functions; the only inputs are the text of ``/proc/PID/cgroup`` and directory names under
``/var/log/pods``. No API server is asked: the kubelet and the container runtimes already name every
cgroup after the pod UID and the container id, in one of a few layouts (proc(7) "/proc/pid/cgroup":
``hierarchy-ID:controller-list:cgroup-path``, one line per v1 hierarchy, ``0::path`` for v2).

Kubernetes, cgroupfs driver (v1 or v2)::

    /kubepods/burstable/pod0d8a3b2c-7f1e-4a5b-9c6d-1e2f3a4b5c6d/<64 hex container id>
    /kubepods/pod0d8a3b2c-7f1e-4a5b-9c6d-1e2f3a4b5c6d/<id>           (Guaranteed QoS: no qos level)

Kubernetes, systemd driver: the UID's dashes become underscores (a dash is systemd's slice separator)::

    /kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0d8a3b2c_7f1e_4a5b_9c6d_1e2f3a4b5c6d.slice/cri-containerd-<id>.scope
    /kubepods.slice/kubepods-pod<uid_>.slice/crio-<id>.scope          (Guaranteed; CRI-O)
    /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/docker-<id>.scope

Static pods (manifests on disk) have a 32-hex UID without dashes (a hash of the manifest); it is
returned as is, and it is also the UID in their ``/var/log/pods`` directory.
Plain containers: Docker ``/docker/<id>`` (cgroupfs) or ``/system.slice/docker-<id>.scope``; Podman
``/machine.slice/libpod-<id>.scope`` (``.../libpod-<id>.scope/container`` when it nests,
``/libpod_parent/libpod-<id>`` with its cgroupfs manager). A pod's
containers all share its network namespace, so a pod is named by its UID only; ``container_id`` is
given only for a namespace that is not a pod's.

>>> parse_cgroup("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-"
...              "pod0d8a3b2c_7f1e_4a5b_9c6d_1e2f3a4b5c6d.slice/cri-containerd-" + "a" * 64 + ".scope")
Identity(pod_uid='0d8a3b2c-7f1e-4a5b-9c6d-1e2f3a4b5c6d', container_id='')
>>> parse_cgroup("12:pids:/docker/" + "b" * 64 + "\\n0::/\\n").container_id == "b" * 64
True
>>> parse_cgroup("0::/user.slice/user-0.slice/session-3.scope")
Identity(pod_uid='', container_id='')
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32}"
#: "pod<uid>" as a whole path component (cgroupfs) or at the end of a "kubepods-...-pod<uid>.slice".
_POD = re.compile(rf"(?:^|/)(?:[a-z]+-)*pod({_UID})(?:\.slice)?(?=/|$)")
_ID = r"[0-9a-f]{64}"
#: A runtime's scope (systemd driver) or a bare id component (cgroupfs driver, plain /docker/<id>).
_SCOPE = re.compile(rf"(?:^|/)(?:docker|cri-containerd|crio|libpod)-({_ID})(?:\.scope)?(?=/|$)")
_BARE = re.compile(rf"/docker/({_ID})(?=/|$)")


@dataclass(frozen=True)
class Identity:
    """Labels naming a namespace's inhabitant; empty strings mean "not known" (the host)."""

    pod_uid: str = ""
    container_id: str = ""


HOST = Identity()


def cgroup_paths(text: str) -> list[str]:
    """The cgroup paths of a ``/proc/PID/cgroup`` text, v2 (``0::``) first, then v1 in file order.

    >>> cgroup_paths("8:pids:/docker/x\\n0::/\\n")
    ['/', '/docker/x']
    """
    v2: list[str] = []
    v1: list[str] = []
    for line in text.splitlines():
        hier, sep, rest = line.partition(":")
        _, sep2, path = rest.partition(":")
        if not sep or not sep2:
            continue
        (v2 if hier == "0" else v1).append(path)
    return v2 + v1


def parse_cgroup(text: str) -> Identity:
    """The pod UID (dashes as in the API) or, outside a pod, the container id (module docstring)."""
    paths = cgroup_paths(text)
    for path in paths:
        if m := _POD.search(path):
            return Identity(pod_uid=m.group(1).replace("_", "-"))
    for path in paths:
        if m := _SCOPE.search(path) or _BARE.search(path):
            return Identity(container_id=m.group(1))
    return HOST


def parse_pod_log_dirs(names: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``/var/log/pods`` entry names -> {pod UID: (Kubernetes namespace, pod name)}.

    The kubelet names each ``<namespace>_<name>_<uid>``; neither a namespace nor a pod name may hold
    ``_`` (DNS-1123), so splitting on it is exact. Names that do not fit are skipped.

    >>> parse_pod_log_dirs(["kube-system_coredns-5d78c9869d-x2x9l_0d8a3b2c-7f1e-4a5b-9c6d-1e2f3a4b5c6d",
    ...                     "lost+found"])
    {'0d8a3b2c-7f1e-4a5b-9c6d-1e2f3a4b5c6d': ('kube-system', 'coredns-5d78c9869d-x2x9l')}
    """
    out: dict[str, tuple[str, str]] = {}
    for name in names:
        parts = name.split("_")
        if len(parts) == 3 and all(parts) and re.fullmatch(_UID, parts[2]):
            out[parts[2]] = (parts[0], parts[1])
    return out
