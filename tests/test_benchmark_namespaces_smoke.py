"""Keep the namespaces benchmark (tests/benchmark/namespaces.py) from rotting: its whole path at a tiny
scale (2 namespaces of 20 sockets, one repetition), no timings asserted; only that it ran, that every
namespace equalled ss inside it, and that the table and its targets were printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests._require import require_netns

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.root
def test_tiny_namespaces_benchmark_runs() -> None:
    require_netns()
    argv = [sys.executable, "-m", "tests.benchmark.namespaces", "--namespaces", "2", "--per-ns", "20", "--reps", "1",
            "--isolate"]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "2 namespaces x ~20 TCP IPv4 sockets" in out
    assert "exact (every namespace == ss inside it): yes" in out
    assert "cAdvisor's method" in out and "targets: scrape p50" in out
