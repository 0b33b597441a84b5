"""The whole exposition of ``--once --source proc`` over each fake /proc tree, against a golden file.

node_exporter's pattern (fixture tree + expected output): one reviewed file per case shows every
series the exporter emits, so a change to names, labels, buckets or error handling shows up as a
diff. Durations, runtime versions and the exporter's own ``process_*`` values vary between runs and
are masked. ``UPDATE_GOLDEN=1`` rewrites.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests._golden import CASES, PROCFS_FIXTURES

ROOT = Path(__file__).resolve().parent.parent
MASKS = [
    (re.compile(r'^(socket_scrape_collector_duration_seconds\{.*\}) .*$', re.M), r"\1 <duration>"),
    (re.compile(r'^(socket_exporter_build_info)\{.*\} (.*)$', re.M), r"\1{<runtime>} \2"),
    (re.compile(r'^(process_\w+) .*$', re.M), r"\1 <this process>"),  # ProcessCollector: our own /proc/self
]


def masked_once(case: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "exporter", "--once", "--source", "proc",
                           "--path.procfs", str(PROCFS_FIXTURES / case)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    text = proc.stdout
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    return proc.returncode, f"# exit code {proc.returncode}\n{text}"


@pytest.mark.parametrize("case", CASES)
def test_exposition_matches_golden(case: str) -> None:
    _, text = masked_once(case)
    golden = PROCFS_FIXTURES / case / "expected.metrics"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert golden.exists(), f"{golden} missing: run UPDATE_GOLDEN=1 pytest {__file__}"
    assert text == golden.read_text()


def test_malformed_tree_fails_the_stage_instead_of_reporting_zero() -> None:
    _, text = masked_once("malformed")
    assert 'socket_scrape_collector_success{collector="proc"} 0.0' in text
