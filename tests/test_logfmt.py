"""Every log line is logfmt (issue 9): the formatter's doctests, a round trip, and the real exporter's lines.

The lines are parsed by tests/_logfmt.py, written from the format, not from exporter/logfmt.py.
"""

from __future__ import annotations

import doctest
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

import exporter.logfmt
import exporter.settings.strict_yaml
from exporter.logfmt import line
from tests._http import ROOT
from tests._logfmt import NotLogfmt, parse, records
from tests._process import exporter as running

LEVELS = {"debug", "info", "warn", "error"}


def test_doctests() -> None:
    for module in (exporter.logfmt, exporter.settings.strict_yaml):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, (module.__name__, result)


@given(st.text(), st.text(alphabet=st.characters(codec="utf-8", categories=["L", "N", "P"]), min_size=1))
def test_any_value_round_trips_on_one_line(value: str, other: str) -> None:
    text = line([("msg", value), ("k", other)])
    assert "\n" not in text and parse(text) == {"msg": value, "k": other}


def test_the_parser_refuses_what_is_not_logfmt() -> None:
    for bad in ('msg="open', "msg=a b", 'msg="tab\there"', "=x", "a=1 ", 'a="x\u2028y"', "INFO:root:hello"):
        try:
            parse(bad)
        except NotLogfmt:
            continue
        raise AssertionError(f"accepted {bad!r}")


def check_lines(text: str) -> list[dict[str, str]]:
    parsed = records(text)
    for record in parsed:
        assert {"ts", "level", "caller", "msg"} <= set(record) and record["level"] in LEVELS, record
        assert record["ts"].endswith("Z") and record["ts"][10] == "T", record
    return parsed


def post(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"",
                                                           method="POST"), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_every_line_of_the_real_exporter_is_logfmt(tmp_path: Path) -> None:
    """Start at debug, good and bad reloads (a key with quotes, = and a newline in it), POST, failed starts."""
    config = tmp_path / "c.yml"
    config.write_text("kinds: [tcp4]\nlog: {level: debug}\n")
    with running(tmp_path, "--config", str(config), "--web.enable-lifecycle") as run:
        run.sighup()
        run.wait_log("config reloaded")
        config.write_text('kinds: [tcp4]\n"we\\"ird = key\\nsecond line": 1\n')
        run.sighup()
        run.wait_log("config reload (SIGHUP) failed")
        os.unlink(config)
        os.mkfifo(config)
        assert post(run.port, "/-/reload") == 500
        run.wait_log("config reload (POST /-/reload) failed")
        parsed = check_lines(run.text())
    levels = {r["level"] for r in parsed}
    assert {"info", "error"} <= levels, parsed
    failures = [r["msg"] for r in parsed if "failed" in r["msg"]]
    assert len(failures) == 2 and 'we"ird = key\\nsecond line' in failures[0] and "a FIFO" in failures[1], failures

    for args in (["--config", str(config)], ["--web.config.file", "/nonexistent.yml"], ["--log.level", "loud"]):
        proc = subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True, cwd=ROOT,
                              timeout=30)
        assert proc.returncode == 2
        [record] = check_lines(proc.stderr)
        assert record["level"] == "error", record


def test_log_level_takes_prometheus_spellings(tmp_path: Path) -> None:
    for level in ("debug", "info", "warn", "error", "warning"):
        proc = subprocess.run([sys.executable, "-m", "exporter", "--log.level", level, "--config.check"],
                              capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert proc.returncode == 0, (level, proc.stderr)
        config = tmp_path / f"{level}.yml"
        config.write_text(f"log: {{level: {level}}}\n")
        proc = subprocess.run([sys.executable, "-m", "exporter", "--config", str(config), "--config.check"],
                              capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert proc.returncode == 0, (level, proc.stderr)


def test_log_level_from_flag_and_file_fail_alike(tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text("log: {level: verbose}\n")
    flag = subprocess.run([sys.executable, "-m", "exporter", "--log.level", "verbose", "--config.check"],
                          capture_output=True, text=True, cwd=ROOT, timeout=30)
    file = subprocess.run([sys.executable, "-m", "exporter", "--config", str(config), "--config.check"],
                          capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert flag.returncode == file.returncode == 2
    flag_msg, file_msg = parse(flag.stderr.strip())["msg"], parse(file.stderr.strip())["msg"]
    want = "got 'verbose'; allowed: debug, info, warn, error"
    assert flag_msg == f"--log.level: {want}" and file_msg == f"{config}: log.level: {want}"
