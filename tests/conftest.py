"""Fixtures for the namespace-based socket population (root only; see tests/_require.py), and the
``slow`` marker that splits the suite into unit tests to run while you work and system tests.

``python -m pytest -m "not slow"`` runs the unit tests in seconds; ``python -m pytest`` (the CI
command, .ci/run) runs everything. Which tests are slow is decided here, in one place, not by a
decorator on every test: a test is ``slow`` when it is marked ``root``, uses a fixture that builds a
namespace or starts a process (SLOW_FIXTURES), or matches SLOW_TESTS (modules and tests that start
the exporter, Prometheus, promtool, pip, linters... themselves). A new test in those modules or on
those fixtures is classified without anyone remembering to; one that slips through is named at the
end of a ``-m "not slow"`` run (``pytest_terminal_summary`` below) so it can be added to the lists.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._require import require_netns
from tests.netns import Netns
from tests.population import Population, socket_population

# The tools the `test` extra installs (ruff, mypy, hadolint, kubernetes-validate) live beside the
# interpreter: `.venv/bin/python -m pytest` finds them without an activated venv or PATH set by hand
# (sudo resets PATH).
_BIN = str(Path(sys.executable).parent)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _BIN:
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")


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


#: Fixtures that create a network namespace, a socket population or a running server/process.
SLOW_FIXTURES = frozenset({"netns", "population", "served", "stack", "image", "snap"})

#: Node ids (fnmatch patterns, relative to the repository) of tests that do not show it by a fixture:
#: system tests that start ``python -m exporter``, Prometheus, promtool, pip builds, linters or child
#: processes; property tests that run thousands of examples; tests that wait for a server timeout.
SLOW_TESTS = (
    "tests/test_benchmark_smoke.py::test_tiny_benchmark_runs_end_to_end",
    "tests/test_churn.py::*",
    "tests/test_ci_run.py::*",
    "tests/test_config.py::test_cli_*",
    "tests/test_dashboard.py::*",
    "tests/test_deploy_manifests.py::*",
    "tests/test_fallback.py::*",
    "tests/test_fleet_federation.py::*",
    "tests/test_fleet_rules.py::*",
    "tests/test_fuzz_parsers.py::*",
    "tests/test_series_budget.py::*",
    "tests/test_golden_exposition.py::*",
    "tests/test_healthcheck.py::*",
    "tests/test_http_load.py::*",
    "tests/test_http_lockout.py::*",
    "tests/test_http_shutdown.py::*",
    "tests/test_web_reload.py::*",
    "tests/test_lifecycle.py::*",
    "tests/test_http_scrape.py::*",
    "tests/test_http_server.py::*time*out*",
    "tests/test_labels.py::*",
    "tests/test_lint.py::*",
    "tests/test_netlink_source.py::test_read_tables_*",
    "tests/test_owner_cache.py::*",
    "tests/test_owners.py::*",
    "tests/test_packaging.py::*",
    "tests/test_population.py::*",
    "tests/test_procfs_net.py::test_live_*",
    "tests/test_readme.py::*_runs_*",
    "tests/test_readme.py::*one_liner*",
    "tests/test_reload.py::*",
    "tests/test_rules.py::*",
    "tests/test_series_per_host.py::*",
    "tests/test_tls_auth.py::*",
    "tests/test_web_config.py::*",
)

#: A test not marked slow that takes longer than this is named in the summary of a "not slow" run.
FAST_BUDGET_S = 2.0


def is_slow(item: pytest.Item) -> bool:
    if item.get_closest_marker("root") or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    return any(fnmatch.fnmatchcase(item.nodeid, pattern) for pattern in SLOW_TESTS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if is_slow(item):
            item.add_marker(pytest.mark.slow)


_overran: list[tuple[str, float]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.duration > FAST_BUDGET_S and "slow" not in report.keywords:
        _overran.append((report.nodeid, report.duration))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _overran:
        terminalreporter.section(f"tests not marked slow that took over {FAST_BUDGET_S:.0f} s")
        for nodeid, seconds in sorted(_overran, key=lambda x: -x[1]):
            terminalreporter.write_line(f"{seconds:6.2f} s  {nodeid}  (add it to SLOW_TESTS in tests/conftest.py)")
