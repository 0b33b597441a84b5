"""Test prerequisites that skip on a developer laptop but FAIL under CI.

Why not a plain ``pytest.skip``: a root-only test that skips in CI is indistinguishable from a passing
run in most dashboards, so a broken runner (no root, no ``ip``) would silently test nothing. Under
``CI=true`` (GitHub Actions, GitLab, and most CI systems set it) a missing prerequisite is a failure.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from typing import NoReturn

import pytest

_CI_TRUE = {"1", "true", "yes"}


def in_ci() -> bool:
    """True when the environment says we run under CI (``CI=true``; ``1``/``yes`` accepted too)."""
    return os.environ.get("CI", "").strip().lower() in _CI_TRUE


def unmet(reason: str) -> NoReturn:
    """Skip the test with ``reason``, or fail it under CI (see module docstring)."""
    if in_ci():
        pytest.fail(f"requirement not met under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def require(condition: bool, reason: str) -> None:
    """Continue when ``condition`` holds, else :func:`unmet` with ``reason``."""
    if not condition:
        unmet(reason)


def require_root() -> None:
    """Network namespaces and ``ip netns`` need CAP_SYS_ADMIN; we simply ask for euid 0."""
    require(os.geteuid() == 0, "needs root (network namespaces)")


def require_tool(name: str) -> str:
    """The absolute path of executable ``name`` on PATH, or skip/fail."""
    path = shutil.which(name)
    require(path is not None, f"needs the {name!r} executable on PATH")
    assert path is not None
    return path


def require_module(name: str) -> None:
    """An importable Python module (e.g. ``psutil`` for the reference counts)."""
    require(importlib.util.find_spec(name) is not None, f"needs the Python module {name!r}")


def require_netns() -> None:
    """Everything the namespace-based tests need: root, ``ip``, ``ss``, psutil, netns support."""
    require_root()
    require_tool("ip")
    require_tool("ss")
    require_module("psutil")
    require(os.path.exists("/proc/self/ns/net"), "kernel without network namespace support")
