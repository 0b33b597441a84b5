"""Config reload: every bad file keeps the last good config; no scrape mixes two configs.

The in-process tests drive :class:`exporter.reload.Reloader` over real files rewritten on disk and
scrape through the real registry (real netlink dumps of this namespace). The last two run the real
exporter in a namespace: a real SIGHUP to the real process, and ``POST /-/reload``.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from exporter.exposition.registry import build_registry
from exporter.reload import Reloader
from exporter.settings.config import Config, load_config
from tests._golden import PROCFS_FIXTURES
from tests._served import http, running_exporter
from tests.exposition import samples
from tests.netns import Netns

A = "kinds: [tcp4]\nsource: netlink\nper_process: {labels: [pid]}\n"
BASIC = PROCFS_FIXTURES / "basic"
B = "kinds: [unix]\nsource: netlink\nper_process: {labels: [process], max_owners: 5}\n"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b]\n"
BAD_FILES: dict[str, Callable[[Path], object]] = {
    "syntax_error": lambda p: p.write_text("kinds: [tcp\n"),
    "unknown_key": lambda p: p.write_text("kinds: [tcp]\nper_proces: {enabled: false}\n"),
    "duplicate_key": lambda p: p.write_text("kinds: [tcp]\nkinds: [udp]\n"),
    "wrong_type": lambda p: p.write_text("kinds: [tcp]\nper_process: {max_owners: many}\n"),
    # valid YAML (and a valid config!) once cut inside its last line: only the final newline tells
    "truncated_mid_write": lambda p: p.write_text(B.replace("max_owners: 5}\n", "max_owners: 5}")),
    "truncated_to_empty": lambda p: p.write_text(""),
    "deleted": lambda p: p.unlink(),
    "oversized": lambda p: p.write_text(A + "# " + "x" * 70_000 + "\n"),
    "alias_bomb": lambda p: p.write_text(BOMB),
    "merge_key": lambda p: p.write_text("base: &b {kinds: [tcp]}\n<<: *b\n"),
    "nesting_bomb": lambda p: p.write_text("kinds: " + "[" * 30_000 + "]" * 30_000 + "\n"),
    "huge_int": lambda p: p.write_text("per_process: {max_owners: " + "9" * 5000 + "}\n"),
    "unhashable_key": lambda p: p.write_text("? [kinds]\n: [tcp]\n"),
    "not_utf8": lambda p: p.write_bytes(b"kinds: [tcp\xff]\n"),
}


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def signature(text: str) -> tuple[frozenset[tuple[str, ...]], frozenset[tuple[str, ...]], frozenset[str]]:
    """What a config decides in a scrape: the series of socket_connections, the owner label names,
    the tables read. Two configs that differ in kinds and labels give two different signatures."""
    s = samples(text)
    series = frozenset((x["family"], x["type"], x["status"]) for x, _ in s["socket_connections"])
    owner_labels = frozenset(tuple(sorted(x)) for x, _ in s.get("socket_process_connections", []))
    return series, owner_labels, frozenset(x["table"] for x, _ in s["socket_scrape_source"])


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "exporter.yml"
    path.write_text(A)
    return path


def reloader_for(path: Path, clock: Callable[[], float] | None = None, **flags: object) -> Reloader:
    return Reloader(str(path), flags, load_config(str(path)), clock or itertools.count(1000).__next__)


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_file_keeps_last_good_config(name: str, config_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    reloader = reloader_for(config_file)
    assert reloader.reload()[0] and reloader.reload()[0]  # clock: 1000 at start, good reloads at 1001, 1002
    good = reloader.state
    BAD_FILES[name](config_file)
    caplog.clear()
    ok, message = reloader.reload("test")
    assert not ok and str(config_file) in message and "\n" not in message
    state = reloader.state
    assert (state.config, state.pipeline, state.shared) == (good.config, good.pipeline, good.shared)
    assert state.reload is not None and state.reload == type(state.reload)(False, 1002)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and "\n" not in errors[0] and "still serving the last good config" in errors[0]
    body = generate_latest(build_registry(reloader)).decode()
    assert samples(body)["socket_config_last_reload_successful"][0][1] == 0.0
    assert samples(body)["socket_config_last_reload_success_timestamp_seconds"][0][1] == 1002
    write_atomically(config_file, B)
    assert reloader.reload()[0] and reloader.state.config.kinds == ("unix",)
    assert reloader.state.reload == type(state.reload)(True, 1003)


def test_flags_keep_overriding_and_listen_address_needs_a_restart(
    config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reloader = reloader_for(config_file, source="proc", procfs=None)
    assert reloader.state.config.source == "netlink"  # the initial config is the caller's, flags applied there
    write_atomically(config_file, B + "web: {listen_address: '127.0.0.1:1'}\n")
    assert reloader.reload()[0]
    config = reloader.state.config
    assert config.source == "proc" and config.kinds == ("unix",) and config.procfs == "/proc"
    assert config.listen_address == Config().listen_address
    assert any("listen_address" in r.getMessage() and "restart" in r.getMessage() for r in caplog.records)
    body = generate_latest(build_registry(reloader)).decode()
    assert {x["source"] for x, _ in samples(body)["socket_scrape_source"]} == {"proc"}


def test_no_scrape_mixes_two_configs(config_file: Path) -> None:
    """Scrapes race reloads flipping between A and B: each scrape is all-A or all-B. Both read a
    fixture /proc tree, so a scrape takes milliseconds even on a loaded runner."""
    fixture = f"source: proc\npath: {{procfs: {BASIC}}}\n"
    a, b = A.replace("source: netlink\n", fixture), B.replace("source: netlink\n", fixture)
    write_atomically(config_file, a)
    reloader = reloader_for(config_file, clock=time.time)
    registry = build_registry(reloader)
    expected = {signature(generate_latest(registry).decode())}
    write_atomically(config_file, b)
    reloader.reload()
    expected.add(signature(generate_latest(registry).decode()))
    assert len(expected) == 2

    stop, seen, reloads = threading.Event(), list[tuple[object, ...]](), [0]

    def flip() -> None:
        for text in itertools.cycle([a, b]):
            if stop.is_set():
                return
            write_atomically(config_file, text)
            assert reloader.reload()[0]
            reloads[0] += 1
            time.sleep(0.001)  # let the scrapers run between reloads

    def scrape() -> None:
        while not stop.is_set():
            seen.append(signature(generate_latest(registry).decode()))

    threads = [threading.Thread(target=flip)] + [threading.Thread(target=scrape) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while (len(seen) < 300 or reloads[0] < 100) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(30)
    assert len(seen) >= 300 and reloads[0] >= 100, (len(seen), reloads[0])
    assert set(seen) == expected  # every scrape matched one config, and both were seen


def _metric(ns: Netns, port: int, name: str) -> list[tuple[dict[str, str], float]]:
    [(status, body)] = http(ns, port)
    assert status == 200
    return samples(body)[name]


def _wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.root
def test_sighup_reloads_the_real_process(netns: Netns, config_file: Path, tmp_path: Path) -> None:
    port, log = 9731, tmp_path / "stderr.log"
    with running_exporter(netns, port, log, "--config", str(config_file), "--source", "proc") as proc:
        def tables() -> set[str]:
            return {x["table"] for x, _ in _metric(netns, port, "socket_scrape_source")}

        def status() -> tuple[float, float]:
            return (_metric(netns, port, "socket_config_last_reload_successful")[0][1],
                    _metric(netns, port, "socket_config_last_reload_success_timestamp_seconds")[0][1])

        assert tables() == {"tcp"} and status()[0] == 1.0
        started = status()[1]
        write_atomically(config_file, B)
        proc.send_signal(signal.SIGHUP)
        _wait_for(lambda: tables() == {"unix"}, "kinds from the reloaded file")
        ok, reloaded_at = status()
        assert ok == 1.0 and reloaded_at > started
        assert {x["source"] for x, _ in _metric(netns, port, "socket_scrape_source")} == {"proc"}  # flag wins

        for n, bad in enumerate(("unknown_key", "deleted"), start=1):
            BAD_FILES[bad](config_file)
            proc.send_signal(signal.SIGHUP)
            _wait_for(lambda n=n: log.read_text().count("config reload (SIGHUP) failed") == n,  # type: ignore[misc]
                      f"the failure line for {bad}")
            assert status() == (0.0, reloaded_at) and tables() == {"unix"} and proc.poll() is None
        failures = [line for line in log.read_text().splitlines() if "failed" in line]
        assert len(failures) == 2 and all(str(config_file) in line for line in failures), failures
        assert "unknown key" in failures[0] and "cannot read" in failures[1]

        # the listen address comes from the flag (flags win); the path is bound when the server starts
        write_atomically(config_file, A + "web: {telemetry_path: /other}\n")
        proc.send_signal(signal.SIGHUP)
        _wait_for(lambda: tables() == {"tcp"}, "the good file again (still served on /metrics)")
        assert status()[0] == 1.0 and "telemetry_path changed from '/metrics' to '/other'" in log.read_text()


@pytest.mark.root
def test_post_reload(netns: Netns, config_file: Path, tmp_path: Path) -> None:
    port = 9731
    with running_exporter(netns, port, tmp_path / "stderr.log", "--config", str(config_file),
                          "--web.enable-lifecycle"):
        write_atomically(config_file, B)
        [(status, message)] = http(netns, port, "/-/reload", "POST")
        assert status == 200 and "kinds unix" in message
        assert {x["table"] for x, _ in _metric(netns, port, "socket_scrape_source")} == {"unix"}
        BAD_FILES["duplicate_key"](config_file)
        [(status, message)] = http(netns, port, "/-/reload", "POST")
        assert status == 500 and "duplicate key 'kinds'" in message and len(message.strip().splitlines()) == 1
        assert _metric(netns, port, "socket_config_last_reload_successful")[0][1] == 0.0
        assert {x["table"] for x, _ in _metric(netns, port, "socket_scrape_source")} == {"unix"}
