"""A running exporter scraped over HTTP inside a namespace with the real socket population.

The exporter lives in the namespace it measures, so a scrape sees its own listener (also in the
references taken before the scrape) plus the scrape's connection: one ESTABLISHED socket owned by the
exporter and one owned by the scraper. That is the exact, asserted difference from ss and psutil.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import pytest

from tests import reference
from tests._require import require_netns, require_tool
from tests.exposition import connection_counts, owner_counts, samples
from tests.netns import Netns
from tests.population import HIDDEN_FROM_SS, Population, socket_population
from tests.test_end_to_end import bound_only, psutil_as_owner_counts

PORT = 9731
SCRAPE = ("import sys, urllib.request\n"
          "r = urllib.request.urlopen('http://127.0.0.1:%d' + sys.argv[1], timeout=30)\n"
          "sys.stdout.write(r.headers.get('Content-Type') + '\\n' + r.read().decode())\n")


def get(ns: Netns, path: str) -> tuple[str, str]:
    """GET a path from inside the namespace: (content type, body)."""
    proc = ns.run([sys.executable, "-c", SCRAPE % PORT, path], check=False)
    assert proc.returncode == 0, proc.stderr
    content_type, _, body = proc.stdout.partition("\n")
    return content_type, body


@pytest.fixture
def served() -> Iterator[tuple[Population, subprocess.Popen[str]]]:
    require_netns()
    with Netns() as ns, socket_population(ns, scale=1) as pop:
        exporter = ns.popen([sys.executable, "-m", "exporter", "--web.listen-address", f"127.0.0.1:{PORT}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            ns.wait_listening(PORT, exporter)
            yield pop, exporter
        finally:
            exporter.terminate()
            exporter.wait(10)


def test_scrape_equals_references_plus_its_own_connection(served: tuple[Population, subprocess.Popen[str]]) -> None:
    pop, exporter = served
    ns = pop.ns
    ss_before, ps_before = reference.ss_counts(ns), reference.psutil_counts(ns, "all")
    content_type, body = get(ns, "/metrics")
    assert content_type.startswith("text/plain; version=0.0.4")

    own = ("AF_INET", "SOCK_STREAM", "ESTABLISHED")
    expected_totals = Counter(ss_before) + Counter(dict.fromkeys(HIDDEN_FROM_SS, 1)) + Counter({own: 2})
    assert connection_counts(body) == expected_totals

    got = owner_counts(body)
    expected = psutil_as_owner_counts(pop, ps_before) + bound_only(pop)
    extra = got - expected
    assert not expected - got
    assert extra[(*own, str(exporter.pid))] == 1
    scraper = [key for key in extra if key[3] != str(exporter.pid)]
    assert len(scraper) == 1 and scraper[0][:3] == own and extra[scraper[0]] == 1
    assert sum(extra.values()) == 2

    health = {labels["collector"]: value for labels, value in samples(body)["socket_scrape_collector_success"]}
    assert health == {"netlink": 1.0, "owners": 1.0}
    assert samples(body)["socket_exporter_build_info"][0][1] == 1.0


def test_exposition_passes_promtool(served: tuple[Population, subprocess.Popen[str]]) -> None:
    promtool = require_tool("promtool")
    _, body = get(served[0].ns, "/metrics")
    check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_landing_page_health_and_404(served: tuple[Population, subprocess.Popen[str]]) -> None:
    ns = served[0].ns
    content_type, page = get(ns, "/")
    assert content_type.startswith("text/html") and 'href="/metrics"' in page
    assert get(ns, "/-/healthy")[1] == "OK\n"
    missing = ns.run([sys.executable, "-c", SCRAPE % PORT, "/nope"], check=False)
    assert missing.returncode != 0 and "404" in missing.stderr
