"""Deployment files: the Kubernetes manifests against the bundled Kubernetes schema, the systemd unit
with systemd-analyze, and both against what the exporter needs: the host's namespaces, the two
capabilities that read other users' /proc/PID/fd, AF_NETLINK, and memory for the measured footprint.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from exporter.cli import build_parser, resolve_config
from exporter.version import __version__
from tests._http import free_port
from tests._require import require, require_tool

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "config/kubernetes"
UNIT = ROOT / "config/socket-exporter.service"
CAPS = {"DAC_READ_SEARCH", "SYS_PTRACE", "SYS_ADMIN"}  # SYS_ADMIN: setns for network_namespaces all
MIB = 1024 * 1024
MDWE_EXEC = ("import ctypes, os, sys; assert ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) == 0, 'PR_SET_MDWE'; "
             "os.execvp(sys.argv[1], sys.argv[1:])")


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


@contextmanager
def exporter_server(cmd: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[int]:
    """Runs ``cmd`` (serving on 127.0.0.1:port) until /-/healthy answers; yields its pid."""
    proc = subprocess.Popen(cmd, env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"server exited: {proc.communicate()[1][-2000:]}"
            try:
                if get(port, "/-/healthy")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not answer /-/healthy in 30 s"
            time.sleep(0.2)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def kind(name: str, wanted: str) -> dict[str, Any]:
    (found,) = [d for d in docs(name) if d["kind"] == wanted]
    return found


def container() -> dict[str, Any]:
    (c,) = kind("daemonset.yaml", "DaemonSet")["spec"]["template"]["spec"]["containers"]
    return c  # type: ignore[no-any-return]


def quantity(q: str) -> int:
    units = {"Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB, "M": 10**6, "G": 10**9}
    m = re.fullmatch(r"(\d+)([KMG]i?)?", q)
    assert m, q
    return int(m[1]) * units.get(m[2] or "", 1)


def unit_keys(text: str) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            k, _, v = line.partition("=")
            keys.setdefault(k.strip(), []).append(v.strip())
    return keys


def test_manifests_validate_against_the_kubernetes_schema(tmp_path: Path) -> None:
    tool = require_tool("kubernetes-validate")
    files = [str(K8S / "daemonset.yaml"), str(K8S / "service.yaml")]
    for version in ("1.30.0", None):  # appArmorProfile needs 1.30; None: the newest bundled schema
        cmd = [tool, "--strict", "--quiet", *(["-k", version] if version else []), *files]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    typo = tmp_path / "typo.yaml"
    typo.write_text((K8S / "daemonset.yaml").read_text().replace("hostPID:", "hostPid:"))
    proc = subprocess.run([tool, "--strict", str(typo)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "hostPid" in proc.stdout + proc.stderr


def test_daemonset_sees_the_host_with_only_three_capabilities() -> None:
    pod = kind("daemonset.yaml", "DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["hostPID"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    c = container()
    sc = c["securityContext"]
    assert set(sc["capabilities"]["add"]) == CAPS and sc["capabilities"]["drop"] == ["ALL"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc.get("privileged") is not True
    (proc_mount,) = [m for m in c["volumeMounts"] if m["name"] == "proc"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "proc"]
    assert volume["hostPath"]["path"] == "/proc" and proc_mount["readOnly"] is True
    args = build_parser().parse_args(c["args"])
    assert args.procfs == proc_mount["mountPath"]
    assert args.network_namespaces == "all"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    hostpaths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    assert hostpaths["pod-logs"] == mounts["pod-logs"]["mountPath"] == args.pod_logs == "/var/log/pods"
    assert hostpaths["run-netns"] == mounts["run-netns"]["mountPath"] == "/run/netns"
    assert mounts["run-netns"]["mountPropagation"] == "HostToContainer"
    port = next(p for p in c["ports"] if p["name"] == "metrics")
    assert port["containerPort"] == port["hostPort"] == int(args.listen_address.rsplit(":", 1)[1])
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/-/healthy", "port": "metrics"}, probe


def test_scrape_objects_select_the_daemonset_pods() -> None:
    labels = kind("daemonset.yaml", "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    namespace = kind("daemonset.yaml", "DaemonSet")["metadata"]["namespace"]
    service = kind("service.yaml", "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["metrics"]
    monitor = kind("prometheus-operator/podmonitor.yaml", "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert service["metadata"]["namespace"] == monitor["metadata"]["namespace"] == namespace
    # the alert rules select job="socket_exporter"; the operator's default job name would not match
    relabel = monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]
    assert {"targetLabel": "job", "replacement": "socket_exporter"} in relabel
    assert 'job="socket_exporter"' in (ROOT / "config/alerts.yml").read_text()


def test_image_tag_follows_the_version() -> None:
    assert container()["image"].rsplit(":", 1)[1] == __version__


def test_memory_settings_cover_the_measured_footprint() -> None:
    """Peak RSS of --once and of the server after scrapes, here: limits need 1.5x headroom over it."""
    cmd = [sys.executable, "-m", "exporter"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    once = subprocess.Popen([*cmd, "--once"], env=env, cwd="/", stdout=subprocess.DEVNULL)
    once_peak = os.wait4(once.pid, 0)[2].ru_maxrss * 1024
    once.returncode = 0  # reaped above
    port = free_port()
    with exporter_server([*cmd, f"--web.listen-address=127.0.0.1:{port}"], port, env) as pid:
        for _ in range(3):
            assert get(port, "/metrics")[0] == 200
        status = Path(f"/proc/{pid}/status").read_text()
    server_peak = int(re.search(r"VmHWM:\s+(\d+) kB", status)[1]) * 1024  # type: ignore[index]
    peak = max(once_peak, server_peak)
    assert 20 * MIB < peak < 100 * MIB, f"peak RSS {peak / MIB:.0f} MiB"
    res = container()["resources"]
    assert quantity(res["requests"]["memory"]) >= server_peak, "request below what the server holds"
    assert 1.5 * peak <= quantity(res["limits"]["memory"]) <= 256 * MIB
    unit = unit_keys(UNIT.read_text())
    assert 1.5 * peak <= quantity(unit["MemoryMax"][-1]) <= 256 * MIB


def test_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    tool = require_tool("systemd-analyze")
    exe = os.path.realpath(sys.executable)  # verify wants an executable that exists
    text = UNIT.read_text().replace("/opt/socket-exporter/bin/socket-exporter", exe)
    (tmp_path / "socket-exporter.service").write_text(text)
    (tmp_path / "typo.service").write_text(text.replace("AmbientCapabilities", "AmbientCapabilites"))
    verify = [tool, "verify", "--man=no"]
    proc = subprocess.run([*verify, str(tmp_path / "socket-exporter.service")], capture_output=True,
                          text=True)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    typo = subprocess.run([*verify, str(tmp_path / "typo.service")], capture_output=True, text=True)
    assert "AmbientCapabilites" in typo.stderr, "verify must report an unknown key"
    security = subprocess.run([tool, "security", "--offline=yes", "--threshold=30",
                               str(tmp_path / "socket-exporter.service")], capture_output=True, text=True)
    assert security.returncode == 0, "exposure above 3.0:\n" + security.stdout[-3000:]


def test_systemd_recipe_venv_is_not_hidden_by_protect_home(tmp_path: Path) -> None:
    """docs/deployment.md's recipe makes the venv with an interpreter by its full path: a venv links back
    to its interpreter and standard library, and ProtectHome=yes hides /home, /root and /run/user from
    the service (a pyenv python3 under /root starts from a shell and fails under systemd)."""
    assert unit_keys(UNIT.read_text())["ProtectHome"] == ["yes"]
    hidden = ("/home", "/root", "/run/user")
    deployment = (ROOT / "docs/deployment.md").read_text()
    (made,) = re.findall(r"^\$SUDO (\S+) -m venv (/opt/socket-exporter)$", deployment, re.M)
    interpreter, _ = made
    assert os.path.isabs(interpreter), "by its full path, not the first python3 on PATH"
    assert f"{interpreter} -m venv /opt/socket-exporter" in UNIT.read_text(), "the unit's install notes agree"
    require(os.path.exists(interpreter), f"{interpreter} (Debian's python3) is not installed here")
    venv = tmp_path / "venv"
    subprocess.run([interpreter, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    probe = "import sys, os; print(os.path.realpath(sys.executable)); print(sys.base_prefix); print(os.__file__)"
    out = subprocess.run([str(venv / "bin/python"), "-c", probe], capture_output=True, text=True, check=True,
                         timeout=60).stdout.split()
    paths = [os.path.realpath(venv / "bin/python"), *out]
    assert not [p for p in paths if p.startswith(hidden)], f"hidden by ProtectHome=yes: {paths}"


def test_unit_keeps_what_the_exporter_needs() -> None:
    unit = unit_keys(UNIT.read_text())
    one = {k: v[-1] for k, v in unit.items()}
    assert one["User"] not in ("root", "0") and one["DynamicUser"] == "yes"
    for key in ("AmbientCapabilities", "CapabilityBoundingSet"):
        assert set(one[key].split()) == {f"CAP_{c}" for c in CAPS}, key
    assert {"AF_NETLINK", "AF_INET", "AF_INET6"} <= set(one["RestrictAddressFamilies"].split())
    assert one.get("PrivateNetwork", "no") == "no" and one.get("PrivateUsers", "no") == "no"
    assert one.get("ProtectProc", "default") == "default" and one.get("ProcSubset", "all") == "all"
    assert one["RestrictNamespaces"] == "net", "setns(CLONE_NEWNET) for network_namespaces: all"
    env_file = one["EnvironmentFile"].lstrip("-")
    assert env_file == "/etc/default/socket-exporter"
    exec_start = shlex.split(one["ExecStart"])
    assert exec_start[1:] == ["$SOCKET_EXPORTER_ARGS"], "unbraced: systemd splits it into words"
    env = dict(line.split("=", 1) for line in (ROOT / "config/socket-exporter.env").read_text().splitlines()
               if line and not line.startswith("#"))
    args = build_parser().parse_args(shlex.split(shlex.split(env["SOCKET_EXPORTER_ARGS"])[0]))
    assert resolve_config(args).network_namespaces == "all"  # and raises on a bad value


def test_hardened_unit_lets_the_exporter_run(tmp_path: Path) -> None:
    """The exporter under strace, with MemoryDenyWriteExecute's W^X rule set by prctl(PR_SET_MDWE):
    every syscall it makes passes the unit's SystemCallFilter, every socket RestrictAddressFamilies."""
    analyze, strace = require_tool("systemd-analyze"), require_tool("strace")
    kernel = tuple(int(n) for n in re.findall(r"\d+", os.uname().release)[:2])
    require(kernel >= (6, 3), "PR_SET_MDWE needs Linux 6.3")

    def members(group: str) -> set[str]:
        out = subprocess.run([analyze, "syscall-filter", group], capture_output=True, text=True).stdout
        lines = [t.strip() for t in out.splitlines()[1:] if t.strip() and not t.strip().startswith("#")]
        return set().union(*(members(t) if t.startswith("@") else {t} for t in lines))

    unit = unit_keys(UNIT.read_text())
    allowed: set[str] = set()
    for entry in unit["SystemCallFilter"]:
        deny, names = entry.startswith("~"), entry.lstrip("~").split()
        found = set().union(*(members(n) if n.startswith("@") else {n} for n in names))
        allowed = allowed - found if deny else allowed | found
    trace = tmp_path / "trace"
    base = [sys.executable, "-c", MDWE_EXEC, strace, "-f", "-qq", "-o", str(trace),
            sys.executable, "-m", "exporter"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    assert subprocess.run([*base, "--once"], env=env, cwd="/", capture_output=True).returncode == 0
    text = trace.read_text()
    port = free_port()
    with exporter_server([*base, f"--web.listen-address=127.0.0.1:{port}"], port, env) as pid:
        assert get(port, "/metrics")[0] == 200
        (child,) = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        os.kill(int(child), 15)  # the exporter, not strace: strace would detach and leave it running
    text += trace.read_text()
    # strace names a negative syscall number (e.g. -4 while a thread is torn down) syscall_0xffff...:
    # the kernel answers those with ENOSYS before any filter could matter, so they are not the exporter's.
    used = {name for name in re.findall(r"^\d+\s+([a-z0-9_]+)\(", text, re.M)
            if not name.startswith("syscall_0xffffffff")}
    assert {"socket", "readlink", "getdents64"} <= used, "the trace missed the exporter's work"
    assert used <= allowed, f"blocked by SystemCallFilter: {sorted(used - allowed)}"
    families = set(re.findall(r"^\d+\s+socket\((AF_\w+)", text, re.M))
    assert "AF_NETLINK" in families and families <= set(unit["RestrictAddressFamilies"][-1].split())


PATCH = K8S / "patches/tls-auth.yaml"
#: strategic-merge keys of the lists this patch touches (k8s.io/api core/v1 patchMergeKey)
MERGE_KEYS = {"containers": "name", "env": "name", "volumeMounts": "mountPath", "volumes": "name"}


def strategic_merge(base: Any, patch: Any, key: str = "") -> Any:
    """What ``kubectl patch --type strategic`` does for the fields used here: maps merge, null
    deletes, keyed lists merge by their key, other lists (args, command) are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = strategic_merge(base.get(k), v, k) if k in base else v
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        by = MERGE_KEYS[key]
        out_list = [dict(x) for x in base]
        for item in patch:
            match = [i for i, x in enumerate(out_list) if x[by] == item[by]]
            if match:
                out_list[match[0]] = strategic_merge(out_list[match[0]], item)
            else:
                out_list.append(item)
        return out_list
    return patch


def patched_daemonset() -> dict[str, Any]:
    ds = kind("daemonset.yaml", "DaemonSet")
    return strategic_merge(ds, yaml.safe_load(PATCH.read_text()))  # type: ignore[no-any-return]


def test_tls_auth_patch_validates_and_its_probes_speak_tls_and_auth(tmp_path: Path) -> None:
    from exporter.healthcheck import parse_flags

    ds = patched_daemonset()
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    # a strategic merge replaces the args list: the patch must repeat the DaemonSet's whole, then add its own
    assert c["args"] == [*container()["args"], "--web.config.file=/etc/socket-exporter/web.yml"], "args repeated"
    args = build_parser().parse_args(c["args"])
    dockerfile = (ROOT / "Dockerfile").read_text()
    python = re.search(r'ENTRYPOINT \["([^"]+)/socket-exporter"\]', dockerfile)[1] + "/python"  # type: ignore[index]
    for probe in ("livenessProbe", "readinessProbe"):
        assert "httpGet" not in c[probe], probe
        command = c[probe]["exec"]["command"]
        assert command[:3] == [python, "-m", "exporter.healthcheck"], command
        flags = parse_flags(command[3:])
        assert (flags.listen_address, flags.web_config_file) == (args.listen_address, args.web_config_file)
        assert c[probe]["timeoutSeconds"] == container()[probe]["timeoutSeconds"], "kept from the DaemonSet"
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "web-config"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "web-config"]
    assert mount["readOnly"] is True and "secretName" in volume["secret"]
    env = {e["name"]: e["value"] for e in c["env"]}
    for path in (args.web_config_file, env["SOCKET_EXPORTER_HEALTHCHECK_PASSWORD_FILE"]):
        assert Path(path).parent == Path(mount["mountPath"]), path
    base = {m["name"] for m in container()["volumeMounts"]}
    assert {m["name"] for m in c["volumeMounts"]} == base | {"web-config"}, "the DaemonSet's own mounts are kept"
    assert c["securityContext"] == container()["securityContext"]
    tool = require_tool("kubernetes-validate")
    merged = tmp_path / "daemonset-tls.yaml"
    merged.write_text(yaml.safe_dump(ds))
    proc = subprocess.run([tool, "--strict", "--quiet", "-k", "1.30.0", str(merged)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kubectl_apply_of_the_directory_gets_only_whole_objects() -> None:
    """``kubectl apply -f config/kubernetes/`` (the DaemonSet's header) reads every file there, not
    the folders below it: a patch there, with no apiVersion or kind, would fail the apply, and so
    would a PodMonitor on a cluster without the Prometheus Operator's CRDs (hence its own folder)."""
    header = (K8S / "daemonset.yaml").read_text()
    assert "kubectl apply -f config/kubernetes/ " in header
    groups = set()
    for path in sorted(K8S.glob("*.yaml")):
        for doc in docs(path.name):
            assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), path.name
            groups.add(doc["apiVersion"].rpartition("/")[0])
    assert groups <= {"", "apps"}, f"only built-in kinds in config/kubernetes/: {groups}"
    assert PATCH.parent != K8S and "kind" not in yaml.safe_load(PATCH.read_text())
    (operator,) = (K8S / "prometheus-operator").glob("*.yaml")
    assert [d["apiVersion"] for d in docs(f"prometheus-operator/{operator.name}")] == ["monitoring.coreos.com/v1"]
    assert "kubectl apply -f config/kubernetes/prometheus-operator/" in header
