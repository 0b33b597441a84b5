"""SIGTERM: scrapes in flight finish within a grace period, one line is logged, the exit code is 0.

A scrape is held in flight for real: the exporter reads a fake procfs whose ``net/tcp`` is a FIFO, so
the collection blocks in ``open()`` until the test writes the table (or never, for the bound).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests._http import FIXTURE_PROCFS, ROOT, free_port


@contextmanager
def held_scrape(tmp: Path) -> Iterator[tuple[subprocess.Popen[bytes], Callable[[], None], Path, list[object]]]:
    """An exporter whose first scrape is in flight, blocked reading the FIFO: (process, release, log, [result]).
    ``release()`` writes the table into the FIFO and closes it, so the collection finishes."""
    procfs = tmp / "procfs"
    shutil.copytree(FIXTURE_PROCFS, procfs, symlinks=True)
    fifo = procfs / "net/tcp"
    fifo.unlink()
    os.mkfifo(fifo)
    port, log = free_port(), tmp / "exporter.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "--web.listen-address", f"127.0.0.1:{port}",
                                 "--source", "proc", "--path.procfs", str(procfs)], cwd=ROOT, stderr=err)
    result: list[object] = []

    def scrape() -> None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
                result.append((r.status, r.read().decode()))
        except Exception as exc:
            result.append(exc)

    try:
        deadline = time.monotonic() + 30
        while "serving" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        thread = threading.Thread(target=scrape)
        thread.start()
        while True:  # the collection has the FIFO open for reading once a non-blocking writer can open it
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                assert exc.errno == errno.ENXIO and time.monotonic() < deadline, exc
                time.sleep(0.02)
        released: list[bool] = []

        def release() -> None:
            if not released:
                released.append(True)
                with contextlib.suppress(BrokenPipeError):  # the exporter is gone
                    os.write(writer, (FIXTURE_PROCFS / "net/tcp").read_bytes())
                os.close(writer)

        try:
            yield proc, release, log, result
        finally:
            release()
        thread.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_sigterm_finishes_the_scrape_in_flight_and_exits_0(tmp_path: Path) -> None:
    with held_scrape(tmp_path) as (proc, release, log, result):
        before = log.read_text()
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert proc.poll() is None  # still finishing the scrape
        release()  # the collection finishes
        assert proc.wait(15) == 0
        elapsed = time.monotonic() - start
    assert result and isinstance(result[0], tuple) and result[0][0] == 200, result
    assert "socket_connections{" in str(result[0][1])
    after = log.read_text()[len(before):].splitlines()
    assert len(after) == 1 and "1 requests in flight finished, 0 abandoned" in after[0], after
    assert elapsed < 5, elapsed


def test_sigterm_with_a_hung_scrape_exits_0_after_the_grace_period(tmp_path: Path) -> None:
    with held_scrape(tmp_path) as (proc, _, log, result):
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        elapsed = time.monotonic() - start
    assert 9 < elapsed < 13, elapsed  # ServerLimits.shutdown_grace is 10 s
    assert result and not isinstance(result[0], tuple), result  # the scrape was abandoned, not answered
    assert "0 requests in flight finished, 1 abandoned" in log.read_text()
