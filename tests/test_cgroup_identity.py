"""The /proc/PID/cgroup parser against lines as each runtime and cgroup driver writes them.

The lines are whole /proc/PID/cgroup files in the shapes kubelet (cgroupfs and systemd drivers,
cgroup v1 and v2), containerd, CRI-O, Docker (cri-dockerd and plain), Podman and kind produce; the
expected labels are written out by hand, not computed.
"""

from __future__ import annotations

import doctest

import pytest

from exporter.netns import identity as cgroup_identity
from exporter.netns.identity import Identity, parse_cgroup, parse_pod_log_dirs

UID = "3e3b7a4c-1d6f-4f3a-8f3e-2b5a6c7d8e9f"
UID_ = UID.replace("-", "_")
CID = "8e4f0f2b9c1d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b"
STATIC = "6a4e4ba8e1c2c6a5c5a8e5b4c1c0a1a2"

POD_CASES = {
    "v1 cgroupfs containerd burstable": (
        f"12:pids:/kubepods/burstable/pod{UID}/{CID}\n"
        f"11:memory:/kubepods/burstable/pod{UID}/{CID}\n"
        f"1:name=systemd:/kubepods/burstable/pod{UID}/{CID}\n"),
    "v1 cgroupfs guaranteed": f"4:cpu,cpuacct:/kubepods/pod{UID}/{CID}\n3:pids:/kubepods/pod{UID}/{CID}\n",
    "v1 systemd containerd": (
        f"11:pids:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"cri-containerd-{CID}.scope\n1:name=systemd:/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope\n0::/\n"),
    "v2 systemd crio besteffort": (
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{CID}.scope\n"),
    "v2 systemd guaranteed cri-dockerd": f"0::/kubepods.slice/kubepods-pod{UID_}.slice/docker-{CID}.scope\n",
    "v2 cgroupfs": f"0::/kubepods/besteffort/pod{UID}/{CID}\n",
    "kind (kubelet nested under kubelet.slice)": (
        "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
        f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope\n"),
    "v1 hybrid, unified line empty": f"12:pids:/kubepods/burstable/pod{UID}/{CID}\n0::/\n",
}


@pytest.mark.parametrize("text", POD_CASES.values(), ids=POD_CASES.keys())
def test_pods_give_the_uid_with_dashes(text: str) -> None:
    assert parse_cgroup(text) == Identity(pod_uid=UID)


def test_static_pod_uid_is_the_32_hex_hash() -> None:
    assert parse_cgroup(f"0::/kubepods/burstable/pod{STATIC}/{CID}\n") == Identity(pod_uid=STATIC)
    assert parse_cgroup(f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC}.slice/"
                        f"cri-containerd-{CID}.scope\n") == Identity(pod_uid=STATIC)


CONTAINER_CASES = {
    "docker v1 cgroupfs": f"12:devices:/docker/{CID}\n11:pids:/docker/{CID}\n",
    "docker v2 systemd": f"0::/system.slice/docker-{CID}.scope\n",
    "docker v2 cgroupfs": f"0::/docker/{CID}\n",
    "podman rootful, nested": f"0::/machine.slice/libpod-{CID}.scope/container\n",
    "podman rootless": f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope\n",
    "podman cgroupfs": f"3:pids:/libpod_parent/libpod-{CID}\n",
    "containerd outside kubernetes": f"0::/system.slice/cri-containerd-{CID}.scope\n",
}


@pytest.mark.parametrize("text", CONTAINER_CASES.values(), ids=CONTAINER_CASES.keys())
def test_plain_containers_give_the_container_id(text: str) -> None:
    assert parse_cgroup(text) == Identity(container_id=CID)


HOST_CASES = {
    "systemd service": "0::/system.slice/sshd.service\n",
    "login session": "0::/user.slice/user-0.slice/session-3.scope\n",
    "init": "0::/init.scope\n",
    "v1 root": "9:name=systemd:/\n8:pids:/\n0::/\n",
    "crio conmon (not the container)": f"0::/system.slice/crio-conmon-{CID}.scope\n",
    "a pod-like word that is not a uid": "0::/system.slice/podcast.service\n",
    "short id": "0::/docker/abc123\n",
    "empty file": "",
    "garbage": "no colons here\n",
}


@pytest.mark.parametrize("text", HOST_CASES.values(), ids=HOST_CASES.keys())
def test_host_processes_have_no_identity(text: str) -> None:
    assert parse_cgroup(text) == Identity()


def test_pod_log_dirs() -> None:
    names = [f"kube-system_coredns-5d78c9869d-x2x9l_{UID}", f"default_web-0_{STATIC}", "lost+found",
             "a_b", f"ns_with_extra_{UID}", f"_empty_{UID}"]
    assert parse_pod_log_dirs(names) == {UID: ("kube-system", "coredns-5d78c9869d-x2x9l"),
                                         STATIC: ("default", "web-0")}


def test_doctests() -> None:
    failed, tried = doctest.testmod(cgroup_identity)
    assert tried >= 4 and failed == 0
