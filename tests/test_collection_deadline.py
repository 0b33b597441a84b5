"""A collection that hangs has a deadline, so it cannot hold every scrape slot (issue 9).

The collect function blocks on an Event the test holds: "a collection is stuck" is a fact, not a
race. Without the deadline each scrape's thread waited on the stuck collection for ever; with the
sixteen scrape slots full, the exporter answered nothing but 503s until a restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exporter.exposition.registry import build_registry
from exporter.pipeline.single_flight import CollectionTimeout, SharedCollection
from exporter.reload import Reloader
from exporter.settings.config import ConfigError, load_config, parse_config
from exporter.web.server import ServerLimits
from tests._http import FIXTURE_PROCFS, Client, new_server, serving
from tests.exposition import samples


class Stuck:
    """A collect function that blocks until ``release`` is set; counts its calls."""

    def __init__(self) -> None:
        self.release, self.calls = threading.Event(), 0

    def __call__(self) -> Any:
        self.calls += 1
        self.release.wait(60)
        return "collection"


def timed(fn: Any) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        fn()
    except BaseException as exc:
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


def test_waiters_give_up_at_the_deadline_and_later_scrapes_fail_at_once() -> None:
    stuck = Stuck()
    shared = SharedCollection(stuck, deadline=0.5)
    before = SharedCollection.timeouts
    try:
        with ThreadPoolExecutor(3) as pool:
            waits = list(pool.map(lambda _: timed(shared.get), range(3)))
        for elapsed, exc in waits:  # all three joined the one flight and gave up at its deadline
            assert isinstance(exc, CollectionTimeout) and 0.4 < elapsed < 2.0, (elapsed, exc)
        elapsed, exc = timed(shared.get)  # past the deadline: no joining, no new flight, no wait
        assert isinstance(exc, CollectionTimeout) and elapsed < 0.1 and "past its 0.5 s deadline" in str(exc)
        assert stuck.calls == 1 and SharedCollection.timeouts == before + 4
    finally:
        stuck.release.set()
    deadline = time.monotonic() + 5
    while True:  # the stuck collection returned: the next scrape starts a fresh one
        try:
            assert shared.get() == "collection"
            break
        except CollectionTimeout:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert stuck.calls == 2


def test_a_stuck_collection_does_not_hold_the_scrape_slots() -> None:
    """Two slots, a collection stuck for good: scrapes are answered with an error at the deadline and
    at once after it, never with 503 scrape_limit (all slots held) nor by hanging."""
    stuck = Stuck()
    shared = SharedCollection(stuck, deadline=0.5)

    class Shared(Collector):
        def collect(self) -> Iterator[GaugeMetricFamily]:
            yield GaugeMetricFamily("shared_result", "test", value=len(shared.get()))

    registry = CollectorRegistry()
    registry.register(Shared())
    server = new_server(registry, limits=ServerLimits(max_scrapes_in_flight=2))
    try:
        with serving(server), ThreadPoolExecutor(2) as pool:
            client = Client(server.server_address[1], timeout=10)
            first = [pool.submit(client.get) for _ in range(2)]
            assert all(500 <= f.result()[0] < 600 for f in first)
            for _ in range(10):
                start = time.monotonic()
                status, body, _ = client.get()
                assert 500 <= status < 600 and "too many scrapes" not in body and time.monotonic() - start < 1.0
            stuck.release.set()
            deadline = time.monotonic() + 5
            while client.get()[0] != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        stuck.release.set()


def test_the_deadline_is_configured_and_counted(tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text(f"kinds: [tcp4]\nsource: proc\npath: {{procfs: {FIXTURE_PROCFS}}}\n"
                      "collection: {timeout: 2.5}\n")
    reloader = Reloader(str(config), {}, load_config(str(config)))
    assert reloader.state.shared._deadline == 2.5
    body = generate_latest(build_registry(reloader)).decode()
    assert samples(body)["socket_exporter_collection_timeouts_total"][0][1] == SharedCollection.timeouts
    assert load_config(str(config)).collection_timeout == 2.5
    for bad in ("0", "-1", ".nan", ".inf", "true", "soon", "{}"):
        with pytest.raises(ConfigError, match=r"^t.yml: collection.timeout: got "):
            parse_config(f"collection: {{timeout: {bad}}}\n", "t.yml")
