"""A small fleet in network namespaces: two hosts with an exporter each, a scraping Prometheus, a global one
that federates it and one that receives its remote write.

Layout (every address lives in a namespace the test creates; nothing touches the host's network)::

    web  10.231.1.2 --veth-- 10.231.1.1 \\
                                         mon: local Prometheus 127.0.0.1:9090 (scrapes both exporters,
    db   10.231.2.2 --veth-- 10.231.2.1 /        evaluates alerts.yml + recording.yml)
                                              global Prometheus 127.0.0.1:9091 (federates the local one
                                                with config/prometheus-federate.example.yml's job,
                                                evaluates fleet-alerts.yml)
                                              receiver Prometheus 127.0.0.1:9092 (remote-write receiver:
                                                the local one writes to it through README's
                                                write_relabel_configs)

Each exporter runs in its host's namespace with the listener, port and ephemeral views on
(tests/_prometheus.py's EXPORTER_CONFIG), so it counts that namespace's sockets only. Both Prometheus
configurations start from the shipped examples (config/prometheus-scrape.example.yml and
config/prometheus-federate.example.yml) with targets, rule files and a 1 s interval filled in, so the
federation job the README documents is the one under test.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from shutil import rmtree
from typing import Any

import yaml

from tests._prometheus import EXPORTER_CONFIG, JOB, Stack, _stop
from tests._promql import FLEET_ALERTS, RECORDING, ROOT, RULES
from tests._served import listening
from tests.netns import Netns

HOSTS = ("web", "db")
LOCAL_ADDR, GLOBAL_ADDR, RECEIVER_ADDR = "127.0.0.1:9090", "127.0.0.1:9091", "127.0.0.1:9092"
EXPORTER_PORT = 9731
EXTERNAL_LABELS = {"prometheus": "local"}
SCRAPE_EXAMPLE = ROOT / "config" / "prometheus-scrape.example.yml"
FEDERATE_EXAMPLE = ROOT / "config" / "prometheus-federate.example.yml"
INTERVALS = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}


def host_ip(index: int) -> str:
    return f"10.231.{index + 1}.2"


def instance(host: str) -> str:
    """The ``instance`` label Prometheus gives ``host``'s exporter."""
    return f"{host_ip(HOSTS.index(host))}:{EXPORTER_PORT}"


def wire(mon: Netns, host: Netns, index: int) -> None:
    """A veth pair host:v0 <-> mon:v<index+1>, a /24 of its own, both ends up."""
    peer, subnet = f"v{index + 1}", f"10.231.{index + 1}"
    host.run(["ip", "link", "add", "v0", "type", "veth", "peer", "name", peer, "netns", mon.name])
    host.run(["ip", "addr", "add", f"{subnet}.2/24", "dev", "v0"])
    host.run(["ip", "link", "set", "v0", "up"])
    mon.run(["ip", "addr", "add", f"{subnet}.1/24", "dev", peer])
    mon.run(["ip", "link", "set", peer, "up"])


def local_config(remote_write: list[dict[str, Any]]) -> dict[str, Any]:
    """The scraping tier; ``remote_write`` entries (README's) are pointed at the receiver."""
    config = yaml.safe_load(SCRAPE_EXAMPLE.read_text())
    config["global"] = {**INTERVALS, "external_labels": EXTERNAL_LABELS}
    config["rule_files"] = [str(RULES), str(RECORDING)]
    config["remote_write"] = [{**entry, "url": f"http://{RECEIVER_ADDR}/api/v1/write"} for entry in remote_write]
    (job,) = config["scrape_configs"]
    job.update(scrape_timeout="1s", static_configs=[{"targets": [instance(h) for h in HOSTS]}])
    return dict(config)


def global_config() -> dict[str, Any]:
    config = yaml.safe_load(FEDERATE_EXAMPLE.read_text())
    config["global"] = dict(INTERVALS)
    config["rule_files"] = [str(FLEET_ALERTS)]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [LOCAL_ADDR]}]
    return dict(config)


@contextmanager
def exporters_up(hosts: dict[str, Netns], workdir: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """One exporter per host namespace, listening on the host's veth address; stopped on exit."""
    config = workdir / "socket_exporter.yml"
    config.write_text(EXPORTER_CONFIG)
    with ExitStack() as stack:
        procs = {}
        for name, ns in hosts.items():
            argv = [sys.executable, "-m", "exporter", "--web.listen-address", instance(name), "--config", str(config)]
            procs[name] = stack.enter_context(listening(ns, EXPORTER_PORT, workdir / f"exporter-{name}.log", argv))
        yield procs


@contextmanager
def prometheus_tiers(mon: Netns, prometheus: str, workdir: Path,
                     remote_write: list[dict[str, Any]]) -> Iterator[tuple[Stack, Stack, Stack]]:
    """(local, global, receiver) Prometheus servers in ``mon``: the local one scrapes and records and
    remote-writes through ``remote_write`` to the receiver; the global one federates the local one.
    Yielded once the global one holds both hosts."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    servers = (("local", local_config(remote_write), LOCAL_ADDR, ()), ("global", global_config(), GLOBAL_ADDR, ()),
               ("receiver", {"global": dict(INTERVALS)}, RECEIVER_ADDR, ("--web.enable-remote-write-receiver",)))
    try:
        for name, config, addr, flags in servers:
            path = workdir / f"prometheus-{name}.yml"
            path.write_text(yaml.safe_dump(config))
            check = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True,
                                   timeout=120, check=False)
            assert check.returncode == 0, check.stdout + check.stderr
            with open(workdir / f"prometheus-{name}.log", "wb") as log:
                argv = [prometheus, f"--config.file={path}", f"--storage.tsdb.path={workdir / name}",
                        f"--web.listen-address={addr}", *flags]
                procs[name] = mon.popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        addrs = (LOCAL_ADDR, GLOBAL_ADDR, RECEIVER_ADDR)
        local, global_, receiver = (Stack(mon, workdir, procs, addr) for addr in addrs)
        local.wait_until(f'count(up{{job="{JOB}"}} == 1) == {len(HOSTS)}')
        global_.wait_until(f"count(instance:socket_exporter_healthy:min == 1) == {len(HOSTS)}")
        yield local, global_, receiver
    finally:
        _stop(procs)


@contextmanager
def fleet_namespaces() -> Iterator[tuple[Netns, dict[str, Netns], Path]]:
    """(mon, {host: namespace}, a work directory), wired; everything removed on exit. The caller puts
    sockets in the hosts, then starts :func:`exporters_up` and :func:`prometheus_tiers`."""
    workdir = Path(tempfile.mkdtemp(prefix="sockexp-fleet-"))
    with ExitStack() as stack:
        stack.callback(rmtree, workdir, ignore_errors=True)
        mon = stack.enter_context(Netns())
        hosts = {name: stack.enter_context(Netns()) for name in HOSTS}
        for index, name in enumerate(HOSTS):
            wire(mon, hosts[name], index)
        yield mon, hosts, workdir
