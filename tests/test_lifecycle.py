"""Process-level reload and signal behaviour of the real exporter (issue 9).

* ``POST /-/reload`` is served only with ``--web.enable-lifecycle`` (Prometheus' flag; off by
  default): without it the endpoint does not exist, and SIGHUP still reloads.
* A config path that stops being a regular file (a FIFO) fails that reload at once, and the next
  reload works: before, the reload thread blocked in open() for ever and took every later SIGHUP
  with it.
* SIGHUPs that arrive while the exporter starts never end it; under ``nohup`` SIGHUP still reloads.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests._http import ROOT, free_port
from tests._process import command, exporter
from tests._require import require, require_module, require_tool
from tests.exposition import samples

A = "kinds: [tcp4]\n"
B = "kinds: [unix]\n"


def request(port: int, path: str = "/metrics", method: str = "GET") -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def tables(port: int) -> set[str]:
    status, body = request(port)
    assert status == 200, body
    return {labels["table"] for labels, _ in samples(body)["socket_scrape_source"]}


def test_post_reload_needs_the_lifecycle_flag_and_sighup_does_not(tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text(A)
    with exporter(tmp_path, "--config", str(config)) as run:
        config.write_text(B)
        status, _ = request(run.port, "/-/reload", "POST")
        assert status in (404, 405) and tables(run.port) == {"tcp"}  # no such endpoint: nothing reloaded
        assert "config reloaded" not in run.text()
        run.sighup()
        run.wait_log("config reloaded")
        assert tables(run.port) == {"unix"}
    config.write_text(A)
    with exporter(tmp_path, "--config", str(config), "--web.enable-lifecycle") as run:
        config.write_text(B)
        status, message = request(run.port, "/-/reload", "POST")
        assert status == 200 and "kinds unix" in message and tables(run.port) == {"unix"}


def test_a_fifo_fails_its_reload_at_once_and_the_next_reload_works(tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text(A)
    with exporter(tmp_path, "--config", str(config)) as run:
        config.unlink()
        os.mkfifo(config)  # open() for reading would wait for a writer for ever
        start = time.monotonic()
        run.sighup()
        text = run.wait_log("config reload (SIGHUP) failed", timeout=10)
        assert time.monotonic() - start < 5 and "not a regular file: a FIFO" in text
        config.unlink()
        config.write_text(B)
        run.sighup()
        run.wait_log("config reloaded", timeout=10)
        assert tables(run.port) == {"unix"}
        assert samples(request(run.port)[1])["socket_config_last_reload_successful"][0][1] == 1.0


def _user_with_slow_hash() -> str:
    """A real bcrypt hash at cost 12: the start makes a dummy hash of that cost (~0.3 s), so the
    start is long enough for the SIGHUPs to land in it on any machine."""
    require_module("bcrypt")
    import bcrypt

    return bcrypt.hashpw(b"secret", bcrypt.gensalt(12)).decode()


@pytest.mark.parametrize("entry", ["python -m exporter", "socket-exporter"])
def test_sighups_during_the_start_never_end_it(tmp_path: Path, entry: str) -> None:
    """SIGHUP in a tight loop from the moment the exporter's own code runs until it serves.

    ``-X importtime`` prints a line when each import completes. For ``python -m exporter`` the line
    for ``exporter.cli`` says the interpreter runs the exporter's own code (its own start, before
    that, is out of any program's reach: see exporter/sighup.py). The ``socket-exporter`` script
    imports exporter.cli before calling ``main()``, so there the mark is ``exporter.settings.config``,
    which main() imports (before this change, exporter.cli imported it, and everything heavy, at
    its top). The web config with a bcrypt user makes the start take a while (its dummy hash), as
    a real start with config, TLS and users does."""
    if entry == "socket-exporter":
        script = Path(sys.executable).parent / "socket-exporter"
        require(script.exists(), f"no socket-exporter script beside {sys.executable} (pip install -e .)")
        argv, mark = [sys.executable, "-X", "importtime", str(script)], "| exporter.settings.config"
    else:
        argv, mark = [sys.executable, "-X", "importtime", "-m", "exporter"], "| exporter.cli"
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{_user_with_slow_hash()}'\n")
    port = free_port()
    proc = subprocess.Popen([*argv, *command(port, "--web.config.file", str(web))[3:]],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started, lines = threading.Event(), list[str]()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if line.rstrip().endswith(mark):
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sent = 0
    try:
        assert started.wait(30), "".join(lines)
        deadline = time.monotonic() + 30
        listening = False
        while not listening:
            assert time.monotonic() < deadline, "exporter did not listen within 30 s"
            for _ in range(20):
                if proc.poll() is not None:
                    break
                proc.send_signal(1)  # SIGHUP
                sent += 1
                time.sleep(0.001)
            assert proc.poll() is None, f"exporter ended by SIGHUP {sent} (rc {proc.returncode}):\n{''.join(lines)}"
            with socket.socket() as s:
                listening = s.connect_ex(("127.0.0.1", port)) == 0
        for _ in range(5):
            proc.send_signal(1)
        time.sleep(0.5)
        assert proc.poll() is None, "".join(lines)
        status, _ = request(port, "/-/healthy")
        assert status == 401  # served, by the configured server (basic auth on every path)
        deadline = time.monotonic() + 10
        while not any("config reloaded" in line for line in lines):  # held SIGHUPs are reloads, not deaths
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.05)
        print(f"\n{sent} SIGHUPs during the start")
        assert sent >= 20
    finally:
        proc.terminate()
        proc.wait(10)
        reader.join(5)


def test_sighup_reloads_when_the_parent_ignored_it(tmp_path: Path) -> None:
    """``nohup`` starts the exporter with SIGHUP ignored. Linux keeps a blocked signal pending even when
    ignored, so this held before the disposition was reset too (exporter/sighup.py): a guard for
    the reset, which POSIX systems that discard ignored signals need."""
    config = tmp_path / "c.yml"
    config.write_text(A)
    with exporter(tmp_path, "--config", str(config), prefix=[require_tool("nohup")]) as run:
        config.write_text(B)
        run.sighup()
        run.wait_log("config reloaded", timeout=10)
        assert tables(run.port) == {"unix"}


@pytest.mark.parametrize("path", ["fifo", "/dev/zero", "dir"])
def test_config_that_is_not_a_regular_file_is_refused_at_start(tmp_path: Path, path: str) -> None:
    target = tmp_path / path if not path.startswith("/") else Path(path)
    if path == "fifo":
        os.mkfifo(target)
    elif path == "dir":
        target.mkdir()
    for flag in ("--config", "--web.config.file"):
        start = time.monotonic()
        proc = subprocess.run(command(free_port(), flag, str(target)), capture_output=True, text=True, cwd=ROOT,
                              timeout=30)
        assert proc.returncode == 2 and time.monotonic() - start < 10, proc.stderr
        [line] = proc.stderr.splitlines()
        assert f"{target}: not a regular file: " in line, line
