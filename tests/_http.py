"""Helpers for the HTTP server tests: a real exporter process, a client, in-process test servers.

All traffic goes to 127.0.0.1 on a free port; nothing leaves the host. Load tests run the exporter
as its own process (``python -m exporter``) so the load generator's threads do not share its GIL.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from exporter.web.server import ExporterHTTPServer
from tests.exposition import samples

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_PROCFS = ROOT / "tests/fixtures/procfs/basic"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_fd_limit(want: int) -> None:
    """The proofs hold a few thousand sockets open in the test process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))


def basic(user: str, password: str | bytes) -> dict[str, str]:
    raw = user.encode() + b":" + (password if isinstance(password, bytes) else password.encode())
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


class Client:
    """http.client against one server: plain, or TLS trusting ``ca`` (optionally with a client cert)."""

    def __init__(self, port: int, ca: Path | None = None, cert: tuple[Path, Path] | None = None,
                 timeout: float = 10.0, context: ssl.SSLContext | None = None) -> None:
        self.port, self.timeout, self.context = port, timeout, context
        if context is None and ca is not None:
            self.context = ssl.create_default_context(cafile=str(ca))
            if cert is not None:
                self.context.load_cert_chain(str(cert[0]), str(cert[1]))

    def connection(self) -> http.client.HTTPConnection:
        if self.context is not None:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=self.timeout, context=self.context)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)

    def get(self, path: str = "/metrics", headers: dict[str, str] | None = None,
            method: str = "GET") -> tuple[int, str, http.client.HTTPResponse]:
        conn = self.connection()
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read().decode(), resp
        finally:
            conn.close()

    def metric(self, name: str, headers: dict[str, str] | None = None, **labels: str) -> float:
        status, body, _ = self.get("/metrics", headers)
        assert status == 200, (status, body)
        for sample_labels, value in samples(body).get(name, []):
            if all(sample_labels.get(k) == v for k, v in labels.items()):
                return value
        raise AssertionError(f"{name}{labels} not in the scrape")


@contextlib.contextmanager
def started_exporter(tmp: Path, *args: str, wrapper: Sequence[str] = ()) -> Iterator[tuple[int, int]]:
    """``python -m exporter`` on 127.0.0.1:<free port> with ``args`` (``wrapper`` prefixes the argv),
    started once its log says it serves; yields (port, pid). It must neither die nor log a traceback."""
    port, log = free_port(), tmp / f"exporter-{time.monotonic_ns()}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([*wrapper, sys.executable, "-m", "exporter", "--web.listen-address",
                                 f"127.0.0.1:{port}", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while "serving" not in log.read_text():
            assert proc.poll() is None, f"exporter exited {proc.returncode}: {log.read_text()}"
            assert time.monotonic() < deadline, f"exporter did not start: {log.read_text()}"
            time.sleep(0.05)
        yield port, proc.pid
        assert proc.poll() is None, f"exporter died: {log.read_text()}"
        assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def exporter_process(tmp: Path, *args: str) -> Iterator[int]:
    """``python -m exporter`` on 127.0.0.1:<free port> with extra ``args``; yields the port.

    It counts the sockets of a fixture procfs, not the host's: these tests measure serving, and a
    host that happens to hold 100k sockets (another test's population) must not decide them.
    """
    with started_exporter(tmp, "--source", "proc", "--path.procfs", str(FIXTURE_PROCFS), *args) as (port, _):
        yield port


@contextlib.contextmanager
def serving(server: ExporterHTTPServer) -> Iterator[ExporterHTTPServer]:
    """Run an in-process server on a thread; shut it down afterwards."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def new_server(registry: CollectorRegistry | None = None, **kwargs: object) -> ExporterHTTPServer:
    return ExporterHTTPServer(("127.0.0.1", 0), registry or CollectorRegistry(), "/metrics", **kwargs)  # type: ignore[arg-type]
