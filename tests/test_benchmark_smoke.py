"""Keep the benchmark (tests/benchmark/) from rotting: its whole code path at a tiny scale, no timings asserted.

The real run (``sudo python -m tests.benchmark``, ~10 minutes) is not part of the suite: its numbers
depend on the machine and its load. This runs every step of it (namespace, population, busy
processes, exporter server, node_exporter if installed, harness, table) on a few hundred sockets,
and renders a table from made-up results without root.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests._require import require_netns
from tests.benchmark import docs
from tests.benchmark.population import shards_for
from tests.benchmark.report import ROWS, Case, render

ROOT = Path(__file__).resolve().parent.parent


def fake_case(name: str, sockets: int, scale: float) -> Case:
    samples = {key: [[0.01 * scale * (i + 1), 0.005 * scale]] * 3 for i, key in enumerate(ROWS)}
    result = {"samples": samples, "bytes": dict.fromkeys(ROWS, 1234), "rss_hwm": 50 << 20, "rss": 40 << 20,
              "concurrency": {"1": [0.1], "10": [0.15], "statuses": [200] * 8 + [503] * 2},
              "flat_rss": {"1": 40 << 20, "10": 41 << 20, "1000": 42 << 20},
              "memory": {"family_rss": 60 << 20, "family_pss": 50 << 20, "family_hwm": 70 << 20, "workers": 2},
              "busy": {"memory": {"family_rss": 61 << 20, "family_pss": 51 << 20, "family_hwm": 71 << 20,
                                  "workers": 2},
                       "flat": {"1": 60 << 20, "10": 61 << 20, "1000": 61 << 20}}}
    return Case(name, sockets, 12, result)


def test_report_renders_every_row_and_target() -> None:
    text = render([fake_case("10k", 10_000, 1), fake_case("100k", 100_000, 10)], "test machine",
                  node_exporter=True, flat_scrapes=1000)
    assert "Machine: test machine" in text
    assert all(label in text for label in ROWS.values())
    assert "8/10 answered 200" in text and "50.0 MB" in text
    assert "holders busy: server + 2 scan workers, RSS sum / Pss sum / peak RSS sum | 61.0 / 51.0 / 71.0 MB" in text
    targets = text.split("Targets at 100k:")[1]
    assert targets.count("MET") + targets.count("MISSED") == 19
    assert "holders busy: CPU s per HTTP scrape" in targets


def test_shards_keep_each_hub_under_fd_setsize() -> None:
    for tcp in (10, 10_000, 40_000, 100_000):
        shards = shards_for(tcp)
        assert len(shards) >= 2 and max(shards) <= 900 and abs(sum(shards) * 10 - tcp) <= 10


def test_tiny_benchmark_runs_end_to_end() -> None:
    require_netns()
    argv = [sys.executable, "-m", "tests.benchmark", "--scales", "150,300", "--busy", "3x40", "--busy-tcp", "100",
            "--reps", "1", "--cpu-rounds", "1", "--concurrent", "3", "--flat-scrapes", "12", "--flat-scale", "150",
            "--busy-flat-scrapes", "12"]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "| case | measurement |" in out and "Targets at 300:" in out
    assert "busy 3x40" in out and "psutil.net_connections('all')" in out and "ss -tanp" in out
    assert "server RSS after 1 / 10 / 12 scrapes" in out
    assert "HOLDERS BUSY: exporter HTTP scrape" in out and "holders busy: server + workers RSS sum" in out


def test_write_docs_replaces_only_the_block_between_the_markers(tmp_path: Path) -> None:
    """``--write-docs``: the rendered table lands between the markers of a copy of docs/performance.md,
    headed by date, command, duration and machine; every line outside them stays as it was."""
    chapter = (ROOT / "docs/performance.md").read_text()
    text = render([fake_case("10k", 10_000, 1), fake_case("100k", 100_000, 10)], "test machine",
                  node_exporter=True, flat_scrapes=1000)
    new = docs.block(text, date="2030-01-02", command="python -m tests.benchmark --write-docs", seconds=313)
    assert new.startswith("Measured on 2030-01-02 with `python -m tests.benchmark --write-docs`, 5 minutes. "
                          "Machine: test machine.\n\n| case | measurement |")
    assert "```text\nTargets at 100k:" in new
    copy = tmp_path / "performance.md"
    copy.write_text(chapter)
    docs.write(copy, new)
    written = copy.read_text()
    before, after = chapter.split(docs.BEGIN)[0], chapter.split(docs.END)[1]
    assert written.startswith(before + docs.BEGIN + "\n" + new + "\n" + docs.END) and written.endswith(after)
    docs.write(copy, new)
    assert copy.read_text() == written, "idempotent"
    with pytest.raises(ValueError, match="no <!-- benchmark-results:begin -->"):
        docs.splice("# Performance\n", new, "x.md")
