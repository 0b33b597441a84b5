"""ruff and mypy run with the config in pyproject.toml: a lint failure fails the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests._require import require_tool

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean() -> None:
    require_tool("ruff")
    proc = subprocess.run(["ruff", "check", "exporter", "tests"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_is_clean() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
