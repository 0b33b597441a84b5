"""Read the exporter's exposition text back into Counters keyed like tests/reference.py."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Sequence

from prometheus_client.parser import text_string_to_metric_families

from tests.netns import Netns

SeriesKey = tuple[str, str, str]
OwnerKey = tuple[str, str, str, str]


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """metric name -> [(labels, value)] for every sample in an exposition."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def connection_counts(text: str) -> Counter[SeriesKey]:
    """socket_connections as a Counter, zero series dropped (Counters compare without zeros)."""
    counts: Counter[SeriesKey] = Counter()
    for labels, value in samples(text).get("socket_connections", []):
        counts[(labels["family"], labels["type"], labels["status"])] += int(value)
    return +counts


def owner_counts(text: str) -> Counter[OwnerKey]:
    """socket_process_connections by (family, type, status, pid label)."""
    counts: Counter[OwnerKey] = Counter()
    for labels, value in samples(text).get("socket_process_connections", []):
        counts[(labels["family"], labels["type"], labels["status"], labels["pid"])] += int(value)
    return +counts


def run_once(ns: Netns, *flags: str) -> str:
    """Run ``python -m exporter --once`` inside the namespace; fail loudly on a non-zero exit."""
    argv: Sequence[str] = [*ns.prefix, sys.executable, "-m", "exporter", "--once", *flags]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exporter --once {flags} exited {proc.returncode}: {proc.stderr}"
    return proc.stdout
