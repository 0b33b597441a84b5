"""A real Prometheus (Debian's package) scraping the real exporter, both inside a test namespace.

Why inside the namespace: the exporter counts the sockets of its own network namespace, so it must
run where the known population lives; Prometheus joins it there so that it can scrape 127.0.0.1 and
nothing leaves the namespace's loopback. The test process itself stays outside, so every HTTP call to
Prometheus or the exporter goes through one short Python client run inside (``ip netns exec``); calls
are batched so a test pays one process start, not one per query.

``with prometheus_stack(ns) as stack:`` starts the exporter and Prometheus (scrape and rule evaluation
every second, rules from config/alerts.yml, a temporary TSDB), waits for enough scrapes and the first
rule evaluations, and stops both (then removes the TSDB) on exit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from shutil import rmtree
from typing import Any

import yaml

from tests._promql import ROOT, RULES
from tests.netns import Netns

EXPORTER_ADDR = "127.0.0.1:9731"
PROMETHEUS_ADDR = "127.0.0.1:9090"
JOB = "socket_exporter"
MIN_SCRAPES = 8  # enough for the [$__rate_interval] = 4s windows and the 20 s range queries
STARTUP_TIMEOUT_S = 60.0

#: Runs inside the namespace: GETs each {"url", "params"} from stdin, prints [{"code", "body"}].
_CLIENT = r"""
import json, sys, urllib.error, urllib.parse, urllib.request
out = []
for req in json.load(sys.stdin):
    url = req["url"] + ("?" + urllib.parse.urlencode(req["params"], doseq=True) if req.get("params") else "")
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            out.append({"code": resp.status, "body": resp.read().decode()})
    except urllib.error.HTTPError as exc:
        out.append({"code": exc.code, "body": exc.read().decode()})
    except OSError as exc:
        out.append({"code": 0, "body": repr(exc)})
json.dump(out, sys.stdout)
"""


class StackError(RuntimeError):
    """The exporter or Prometheus did not come up, with their logs."""


@dataclass
class Stack:
    ns: Netns
    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]]
    #: Where this stack's Prometheus answers (tests/_fleet.py runs two in one namespace).
    prometheus_addr: str = PROMETHEUS_ADDR

    def get(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[tuple[int, str]]:
        """GET every (url, params) from inside the namespace; returns (HTTP status or 0, body)."""
        payload = json.dumps([{"url": url, "params": params} for url, params in requests])
        proc = self.ns.run([sys.executable, "-c", _CLIENT], input=payload, timeout=120)
        return [(r["code"], r["body"]) for r in json.loads(proc.stdout)]

    def api(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One Prometheus API call, decoded; HTTP errors come back as the API's error JSON."""
        return self.api_many([(path, params or {})])[0]

    def api_many(self, calls: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        out = []
        for code, body in self.get([(f"http://{self.prometheus_addr}{path}", p) for path, p in calls]):
            try:
                out.append(dict(json.loads(body)))
            except ValueError:
                out.append({"status": "error", "error": f"HTTP {code}: {body[:500]}"})
        return out

    def metrics_text(self) -> str:
        code, body = self.get([(f"http://{EXPORTER_ADDR}/metrics", {})])[0]
        assert code == 200, f"exporter /metrics answered {code}: {body[:500]}"
        return body

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}:\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.workdir.glob("*.log")))

    def wait_until(self, expr: str, timeout: float = STARTUP_TIMEOUT_S) -> list[dict[str, Any]]:
        """Poll an instant query until it returns a non-empty result; StackError (with logs) if not."""
        deadline, last = time.monotonic() + timeout, {}
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise StackError(f"{name} exited with {proc.returncode}\n{self.logs()}")
            last = self.api("/api/v1/query", {"query": expr})
            if last.get("status") == "success" and last["data"]["result"]:
                return list(last["data"]["result"])
            time.sleep(0.5)
        raise StackError(f"timed out waiting for {expr!r}; last answer {last}\n{self.logs()}")


def _config(workdir: Path) -> Path:
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [EXPORTER_ADDR]}]}],
    }
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


#: The exporter's config in the stack: the optional views on, so their panels and rules have data.
EXPORTER_CONFIG = "listeners: {enabled: true}\nports: {enabled: true}\nephemeral: {enabled: true}\n"


def _exporter_config(workdir: Path) -> Path:
    path = workdir / "socket_exporter.yml"
    path.write_text(EXPORTER_CONFIG)
    return path


@contextmanager
def prometheus_stack(ns: Netns, prometheus: str, exporter_args: Sequence[str] = ()) -> Iterator[Stack]:
    """Exporter (with ``exporter_args``) + Prometheus in ``ns``, ready (>= MIN_SCRAPES scrapes, rules
    evaluated) when yielded."""
    workdir = Path(tempfile.mkdtemp(prefix="sockexp-prom-"))
    with ExitStack() as cleanup:
        cleanup.callback(rmtree, workdir, ignore_errors=True)
        stack = Stack(ns, workdir, {})
        cleanup.callback(_stop, stack.procs)
        argvs = {
            "exporter": [sys.executable, "-m", "exporter", "--web.listen-address", EXPORTER_ADDR,
                         "--config", str(_exporter_config(workdir)), *exporter_args],
            "prometheus": [prometheus, f"--config.file={_config(workdir)}",
                           f"--storage.tsdb.path={workdir / 'tsdb'}",
                           f"--web.listen-address={PROMETHEUS_ADDR}"],
        }
        for name, argv in argvs.items():
            with open(workdir / f"{name}.log", "wb") as log:
                stack.procs[name] = ns.popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        up = f'up{{job="{JOB}"}}'
        stack.wait_until(f"count_over_time({up}[1m]) >= {MIN_SCRAPES} and {up} == 1")
        stack.wait_until("count(socket_exporter:alert_threshold) > 0")  # rules evaluate too
        stack.wait_until("count(process:socket_close_wait:sum) > 0")
        yield stack


def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM (Prometheus flushes and unlocks its TSDB), SIGKILL after 10 s; the namespace's own
    cleanup kills anything left anyway."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
