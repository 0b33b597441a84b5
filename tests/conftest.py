"""Fixtures for the namespace-based socket population (root only; see tests/_require.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._require import require_netns
from tests.netns import Netns
from tests.population import Population, socket_population


@pytest.fixture
def netns() -> Iterator[Netns]:
    """A fresh, empty namespace ``sockexp-<hex>`` with lo up; everything in it is killed afterwards."""
    require_netns()
    with Netns() as ns:
        yield ns


@pytest.fixture(scope="module")
def population() -> Iterator[Population]:
    """The default (scale=1) population in its own namespace, shared by a module's tests.

    Module scope because setup takes ~1 s; its TIME_WAIT sockets last 60 s from setup, so a module
    using it must finish within a minute (test_population.py takes a few seconds)."""
    require_netns()
    with Netns() as ns, socket_population(ns, scale=1) as pop:
        yield pop


#: Directories the fake /proc trees need but git cannot store because they are empty: a process with
#: no open fds (kernel thread) and a pid directory whose process vanished (no fd/, no comm).
EMPTY_FIXTURE_DIRS = ("basic/2/fd", "basic/9999", "malformed/1/fd")


@pytest.fixture(scope="session", autouse=True)
def _restore_empty_fixture_dirs() -> None:
    root = Path(__file__).resolve().parent / "fixtures" / "procfs"
    for rel in EMPTY_FIXTURE_DIRS:
        (root / rel).mkdir(parents=True, exist_ok=True)
