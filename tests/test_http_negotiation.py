"""The exposition is negotiated as client_python negotiates it, checked with real clients.

OpenMetrics goes to a client whose Accept asks for it (Prometheus sends exactly the header below), the
0.0.4 text to everyone else, labelled ``version=0.0.4`` even when the client offers ``1.0.0`` (Debian's
Prometheus 2.42 refuses that label); gzip when Accept-Encoding allows it, with curl and urllib.
"""

from __future__ import annotations

import gzip
import subprocess
import urllib.request
from pathlib import Path

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests._http import exporter_process
from tests._require import require_tool
from tests.exposition import samples

PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def fetch(port: int, **headers: str) -> tuple[dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as r:
        return dict(r.headers.items()), r.read()


def test_openmetrics_text_and_gzip(tmp_path: Path) -> None:
    with exporter_process(tmp_path) as port:
        headers, body = fetch(port)
        assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert "Content-Encoding" not in headers
        text = body.decode()
        assert samples(text)["socket_connections"] and "# EOF" not in text

        headers, body = fetch(port, Accept=PROMETHEUS_ACCEPT)
        assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
        om = body.decode()
        assert om.endswith("# EOF\n")
        families = {f.name: f for f in text_string_to_metric_families(om)}
        assert families["socket_connections"].samples
        assert families["socket_exporter_http_requests_rejected"].type == "counter"
        # The same series in both formats (OpenMetrics names counters without _total in the family).
        assert sum(len(f.samples) for f in families.values()) == sum(len(v) for v in samples(text).values())

        headers, body = fetch(port, Accept="text/plain;version=1.0.0;escaping=allow-utf-8")
        assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"

        headers, body = fetch(port, **{"Accept-Encoding": "gzip", "Accept": PROMETHEUS_ACCEPT})
        assert headers["Content-Encoding"] == "gzip" and gzip.decompress(body).decode().endswith("# EOF\n")

        curl = require_tool("curl")
        out = subprocess.run([curl, "-sS", "--compressed", "-D", "-", f"http://127.0.0.1:{port}/metrics"],
                             capture_output=True, timeout=30, check=True).stdout
        head, _, decoded = out.partition(b"\r\n\r\n")
        assert b"content-encoding: gzip" in head.lower() and samples(decoded.decode())["socket_connections"]
